"""`daskstep sidecar reaper --label daskstep.run=ID`: removes a run's containers as soon as
the run's controller is gone, as testcontainers' reaper (Ryuk) does.

The controller holds our stdin open. EOF (it exited or was killed, however), SIGTERM, or the
kernel's parent-death signal: we remove every container with the label, and exit 0. A normal
run removes its containers itself first, so we find none.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from sidecar.lifecycle import StopSignal, follow_run

EXIT_UNAVAILABLE = 69


def _read_until_eof(stop: StopSignal) -> None:
    while os.read(sys.stdin.fileno(), 4096):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="daskstep sidecar reaper", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--label", required=True, metavar="KEY=VALUE", help="containers to remove")
    args = parser.parse_args(argv)
    key, sep, value = args.label.partition("=")
    if not (key and sep and value):
        parser.error(f"--label {args.label!r}: write KEY=VALUE, e.g. daskstep.run=ds-1234")
    stop = StopSignal().install()
    follow_run()
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as e:
        print(f"reaper: error: cannot reach the Docker engine: {e}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    threading.Thread(target=_read_until_eof, args=(stop,), daemon=True).start()
    print(f"reaper: watching {args.label}", flush=True)
    while not stop.wait(3600):
        pass
    removed = 0
    for row in client.api.containers(all=True, filters={"label": [args.label]}):
        try:
            client.api.remove_container(row["Id"], force=True, v=True)
            removed += 1
        except Exception as e:  # already being removed by the controller
            print(f"reaper: {row['Names']}: {e}", flush=True)
    print(f"reaper: removed {removed} container(s) of {args.label}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
