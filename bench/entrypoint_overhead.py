"""What does the entrypoint cost a step, and how soon after the scheduler is up does the step run?

1. Wall time of `python3 -I daskstep-entrypoint.pyz --scheduler <ready> -- true`, against the
   anchor `python3 -I -c pass`, and against a floor: the smallest zipapp that runs the command
   through subprocess and passes its exit code on (no waiting, no status). All run alternately.
2. Latency from the scheduler's readiness to the command's start: the wrapper waits for a
   scheduler that starts later; this process probes the port every millisecond to see when the
   scheduler answers, and the wrapper's status file says when it started the command.

    python bench/entrypoint_overhead.py [--rounds 30] [--latency-rounds 8] [--python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daskstep.pack import pack
from entrypoint.waiter import dask_handshake

GOAL_RATIO = 1.25  # over the floor: what the wrapper adds to any zipapp that runs a command
GOAL_LATENCY = 0.100
FLOOR_MAIN = "import subprocess, sys\nsys.exit(subprocess.call(sys.argv[2:]))\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_scheduler(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
        + ["--port", str(port), "--dashboard-address", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_answering(port: int, timeout: float = 60.0, every: float = 0.001) -> float:
    """Wall-clock time at which the scheduler first completed a Dask handshake."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dask_handshake(f"tcp://127.0.0.1:{port}", 1.0)
            return time.time()
        except OSError:
            time.sleep(every)
    raise RuntimeError("the scheduler did not start")


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def overhead(python: str, pyz: Path, floor: Path, rounds: int) -> dict[str, list[float]]:
    port = free_port()
    scheduler = start_scheduler(port)
    try:
        wait_answering(port)
        variants = {
            "python3 -I -c pass (anchor)": [python, "-I", "-c", "pass"],
            "minimal zipapp running `true` (floor)": [python, "-I", str(floor), "--", "true"],
            "entrypoint --scheduler <ready> -- true": [
                python,
                "-I",
                str(pyz),
                "--scheduler",
                f"127.0.0.1:{port}",
                "--",
                "true",
            ],
        }
        for argv in variants.values():  # warm the page cache
            timed(argv)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for key, argv in variants.items():
                times[key].append(timed(argv))
        return times
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def latency(python: str, pyz: Path, rounds: int, folder: Path) -> list[float]:
    out = []
    for i in range(rounds):
        port = free_port()
        status = folder / f"status-{i}.json"
        wrapper = subprocess.Popen(
            [python, "-I", str(pyz), "--scheduler", f"127.0.0.1:{port}", "--wait-timeout", "60"]
            + ["--status-file", str(status), "--", "true"],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # the wrapper is in its backoff loop by now
        scheduler = start_scheduler(port)
        try:
            ready = wait_answering(port)
            if wrapper.wait(timeout=60) != 0:
                raise RuntimeError("the wrapper failed")
        finally:
            scheduler.terminate()
            scheduler.wait(timeout=30)
        started = json.loads(status.read_text())["command_started_at"]
        started_ts = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
        out.append(started_ts - ready)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--latency-rounds", type=int, default=8)
    default_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    parser.add_argument("--python", default=default_python)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pyz = pack(folder / "daskstep-entrypoint.pyz")
        floor = folder / "floor.pyz"
        with zipfile.ZipFile(floor, "w") as z:
            z.writestr("__main__.py", FLOOR_MAIN)
        version = subprocess.run(
            [args.python, "-I", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"entrypoint overhead: {args.python} (Python {version}), {args.rounds} rounds")
        times = overhead(args.python, pyz, floor, args.rounds)
        anchor = statistics.median(next(iter(times.values())))
        print(f"\n{'variant':42} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7}")
        for key, values in times.items():
            med = statistics.median(values)
            print(
                f"{key:42} {med * 1000:6.1f}ms {min(values) * 1000:6.1f}ms "
                f"{max(values) * 1000:6.1f}ms {med / anchor:6.2f}x"
            )
        ratio = statistics.median(times[list(times)[-1]]) / anchor
        floor_ratio = statistics.median(times[list(times)[1]]) / anchor
        over = ratio / floor_ratio
        print(
            f"goal: entrypoint <= {GOAL_RATIO}x the floor; reached {over:.2f}x "
            f"({'met' if over <= GOAL_RATIO else 'NOT met'}; {ratio:.2f}x the anchor, "
            f"the floor {floor_ratio:.2f}x)"
        )

        lat = latency(args.python, pyz, args.latency_rounds, folder)
        print(
            f"\nscheduler ready -> command started, {len(lat)} rounds: median "
            f"{statistics.median(lat) * 1000:.0f} ms, min {min(lat) * 1000:.0f} ms, "
            f"max {max(lat) * 1000:.0f} ms"
        )
        verdict = "met" if statistics.median(lat) <= GOAL_LATENCY else "NOT met"
        print(f"goal: <= {GOAL_LATENCY * 1000:.0f} ms -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
