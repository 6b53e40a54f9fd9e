"""`daskstep sidecar reaper --label daskstep.run=ID` (Docker), `--kubernetes NS/ROOT`,
`--slurm RUN` / `--htcondor RUN`, `--folder PATH`, or `--status FILE`: removes a run's
containers, deletes its root object (which owns everything else of the run), cancels its batch
jobs, removes its private folder (TLS keys, credentials), or records the run as failed
(`ControllerLost`), as soon as the run's controller is gone, as testcontainers' reaper (Ryuk)
does.

The controller holds our stdin open. EOF (it exited or was killed, however), SIGTERM, or the
kernel's parent-death signal: we remove what is the run's, and exit 0. A normal run removes it
itself first, so we find nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from entrypoint.reporter import atomic_write, iso
from sidecar.lifecycle import StopSignal, exit_after_stop, follow_run

EXIT_UNAVAILABLE = 69
DRAIN_SECONDS = 30.0  # how long a dead run's log sidecar may drain before the run is marked


def _read_until_eof(stop: StopSignal) -> None:
    while os.read(sys.stdin.fileno(), 4096):
        pass
    stop.set()


def _until_the_controller_goes(stop: StopSignal, what: str) -> None:
    threading.Thread(target=_read_until_eof, args=(stop,), daemon=True).start()
    print(f"reaper: watching {what}", flush=True)
    while not stop.wait(3600):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="daskstep sidecar reaper", description=__doc__.split("\n")[0]
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", metavar="KEY=VALUE", help="Docker containers to remove")
    which.add_argument("--kubernetes", metavar="NS/ROOT", help="the run's root ConfigMap")
    which.add_argument("--slurm", metavar="RUN", help="the run's Slurm jobs (named RUN)")
    which.add_argument("--htcondor", metavar="RUN", help="the run's HTCondor jobs (DaskstepRun)")
    which.add_argument("--folder", metavar="PATH", help="the run's private folder (its keys)")
    which.add_argument("--status", metavar="FILE", help="the run's status.json: mark it failed")
    parser.add_argument(
        "--store", metavar="DIR", help="with --status: the run's log store, drained first"
    )
    args = parser.parse_args(argv)
    if args.folder:
        return _reap_folder(args.folder)
    if args.status:
        return _mark_lost(Path(args.status), Path(args.store) if args.store else None)
    if args.slurm or args.htcondor:
        return _reap_batch(args.slurm, args.htcondor)
    if args.kubernetes:
        namespace, sep, root = args.kubernetes.partition("/")
        if not (namespace and sep and root):
            parser.error(f"--kubernetes {args.kubernetes!r}: write NAMESPACE/ROOT, e.g. ns/ds-1")
        return _reap_kubernetes(namespace, root)
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
    _until_the_controller_goes(stop, args.label)
    removed = 0
    for row in client.api.containers(all=True, filters={"label": [args.label]}):
        try:
            client.api.remove_container(row["Id"], force=True, v=True)
            removed += 1
        except Exception as e:  # already being removed by the controller
            print(f"reaper: {row['Names']}: {e}", flush=True)
    containers = "container" if removed == 1 else "containers"
    print(f"reaper: removed {removed} {containers} of {args.label}", flush=True)
    return 0


def _reap_folder(path: str) -> int:
    """The run's TLS keys and credentials must not outlive it, even when it is SIGKILLed."""
    import shutil

    stop = StopSignal().install()
    follow_run()
    _until_the_controller_goes(stop, path)
    shutil.rmtree(path, ignore_errors=True)
    print(f"reaper: removed {path}", flush=True)
    return 0


def _mark_lost(status: Path, store: Path | None) -> int:
    """A run whose controller died without recording its end is failed, not running for
    ever. The log sidecar drains first (it holds the store's lock until it exits, which it
    does when the controller dies), so whoever follows the logs sees every line before the
    end."""
    stop = StopSignal().install()
    follow_run()
    _until_the_controller_goes(stop, str(status))
    if _running(status) is None:  # recorded its end: nothing to drain for, nothing to mark
        return 0
    if store is not None:
        _wait_for_the_store(store, DRAIN_SECONDS)
    if mark_controller_lost(status):
        print(f"reaper: marked {status} failed: ControllerLost", flush=True)
    return 0


def _running(status: Path) -> dict | None:
    """The run's status.json while it says the run has not ended, else None."""
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return None
    running = isinstance(doc, dict) and doc.get("status") in ("pending", "running")
    return doc if running else None


def _wait_for_the_store(store: Path, seconds: float) -> None:
    """Until no log sidecar holds the store's writer lock, or `seconds` pass."""
    from sidecar.logs import store_in_use

    deadline = time.monotonic() + seconds
    while store_in_use(store) and time.monotonic() < deadline:
        time.sleep(0.05)


def mark_controller_lost(path: Path, now: float | None = None) -> bool:
    """Record in a run's status.json that its controller died before the run ended: the run
    and its running steps failed (a step's own exit code, when its entrypoint wrote one),
    the steps not begun skipped. Whether it changed anything: an ended run is left alone."""
    doc = _running(path)
    if doc is None:
        return False
    now = time.time() if now is None else now
    controller = doc.get("controller") or "daskstep run"
    doc.update(
        status="failed",
        reason="ControllerLost",
        message=f"the controller ({controller}) died before the run ended",
        finished_at=iso(now),
    )
    started = _epoch(doc.get("started_at"))
    if started is not None:
        doc["duration_seconds"] = round(now - started, 3)
    steps = doc.get("steps") if isinstance(doc.get("steps"), list) else []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        if step.get("status") == "running":
            step.update(status="failed", reason="ControllerLost", finished_at=iso(now))
            own = _step_status(path.parent / "steps", index, str(step.get("name")))
            if isinstance(own.get("exit_code"), int):  # its entrypoint outlived us a moment
                step.update(exit_code=own["exit_code"], reason=own.get("reason") or "Error")
        elif step.get("status") == "pending":
            step["status"] = "skipped"
    atomic_write(str(path), json.dumps(doc, indent=2) + "\n")
    return True


def _epoch(stamp: object) -> float | None:
    """status.json's `2026-11-28T15:54:02.819Z` in seconds since the epoch."""
    from datetime import datetime

    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _step_status(folder: Path, index: int, name: str) -> dict:
    """What step `index`'s entrypoint wrote (daskstep.record's `NN-<name>.json`), or {}."""
    try:
        doc = json.loads((folder / f"{index + 1:02d}-{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _reap_batch(slurm: str | None, htcondor: str | None) -> int:
    """The same commands teardown uses (daskstep/batch/systems.py), so a job of the run that
    teardown would have cancelled is cancelled here too."""
    stop = StopSignal().install()
    follow_run()
    if slurm:
        argv, what = ["scancel", f"--name={slurm}"], f"slurm jobs named {slurm}"
    else:
        constraint = f'DaskstepRun == "{htcondor}"'
        argv, what = ["condor_rm", "-constraint", constraint], f"htcondor jobs with {constraint}"
    _until_the_controller_goes(stop, what)
    done = subprocess.run(argv, capture_output=True, text=True)
    print(f"reaper: {' '.join(argv)}: exit {done.returncode} {done.stderr.strip()}", flush=True)
    return 0


def _reap_kubernetes(namespace: str, root: str) -> int:
    """Deleting the root deletes the run: every other object has an ownerReference to it."""
    stop = StopSignal().install()
    follow_run()
    try:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        from sidecar.kubernetes import _core_api

        core = _core_api()
    except Exception as e:
        print(f"reaper: error: no Kubernetes configuration: {e}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    _until_the_controller_goes(stop, f"configmap {namespace}/{root}")
    try:
        body = V1DeleteOptions(propagation_policy="Foreground")
        core.delete_namespaced_config_map(root, namespace, body=body)
        print(f"reaper: deleted configmap {namespace}/{root} and what it owns", flush=True)
    except ApiException as e:
        if e.status != 404:
            print(f"reaper: error: deleting {namespace}/{root}: {e.reason}", flush=True)
            return 1
        print(f"reaper: configmap {namespace}/{root} was already gone", flush=True)
    return 0


if __name__ == "__main__":
    exit_after_stop(main())
