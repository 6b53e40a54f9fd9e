"""How fast does the log sidecar move a file into the store, next to a plain block copy?

The same bytes (log-like lines of varied length) go, alternately in this one process tree:
- through a plain 1 MiB block copy with an fsync at the end (the anchor);
- through the real `daskstep sidecar logs` process, checkpoints on, into a fresh store, timed
  from its start until the store holds every byte; its CPU time gives the CPU per MB.

    python bench/log_throughput.py [--megabytes 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.4
BLOCK = 1 << 20


def make_log(path: Path, megabytes: int) -> int:
    """Lines like a worker's: a timestamp, a logger, a message of varied length."""
    rng = random.Random(1)
    words = [b"task", b"worker", b"memory", b"transfer", b"key", b"bytes", b"done", b"tcp://x"]
    target, size, i = megabytes << 20, 0, 0
    with open(path, "wb") as f:
        while size < target:
            body = b" ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
            line = b"2026-11-27 12:00:00,%03d - distributed.worker - INFO - %d %s\n" % (
                i % 1000,
                i,
                body,
            )
            f.write(line)
            size += len(line)
            i += 1
    return size


def block_copy(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(BLOCK):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return time.perf_counter() - t


def sidecar(raw: Path, workspace: Path, size: int) -> tuple[float, float]:
    """Wall seconds until the store holds `size` bytes, and the sidecar's CPU seconds."""
    store = workspace / ".daskstep" / "logs" / "workers" / "app.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "sidecar", "logs", "--workspace", str(workspace)]
        + ["--source", f"worker={raw}/*.log"],
        cwd=Path(__file__).resolve().parents[1],
    )
    while not (store.exists() and store.stat().st_size >= size):
        time.sleep(0.005)
        if proc.poll() is not None:
            raise RuntimeError("the sidecar exited early")
    wall = time.perf_counter() - t
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        folder = Path(tmp)
        raw = folder / "raw"
        raw.mkdir()
        size = make_log(raw / "app.log", args.megabytes)
        mb = size / 1e6
        copies, walls, cpus = [], [], []
        for i in range(args.rounds):
            copies.append(block_copy(raw / "app.log", folder / f"copy-{i}"))
            (folder / f"copy-{i}").unlink()
            wall, cpu = sidecar(raw, folder / f"ws-{i}", size)
            walls.append(wall)
            cpus.append(cpu)
        copy, wall, cpu = (statistics.median(x) for x in (copies, walls, cpus))
        print(f"log throughput: {mb:.0f} MB of log lines, {args.rounds} alternating rounds")
        print(f"  plain block copy (anchor)   {mb / copy:8.0f} MB/s   ({copy:.2f} s)")
        print(f"  daskstep sidecar logs       {mb / wall:8.0f} MB/s   ({wall:.2f} s, from start)")
        ratio = copy / wall
        print(
            f"  ratio sidecar / copy        {ratio:8.2f}x   (goal >= {GOAL}x: "
            f"{'met' if ratio >= GOAL else 'NOT met'})"
        )
        print(
            f"  sidecar CPU                 {cpu / mb * 1000:8.1f} ms per MB "
            f"({cpu:.2f} s for {mb:.0f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
