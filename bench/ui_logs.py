"""How fast does `daskstep ui` serve the first page of a huge log, and what does it cost the
server's memory?

A run whose job log has 1,000,000 lines (written by the log store itself); the real
`daskstep ui` process serves its logs tab's first page (the newest 200 lines). Timed over HTTP
from here, alternated with the anchor: `tail -n 200` of the same bytes as a plain file. The
server's RSS is read before the first request and after all of them.

    python bench/ui_logs.py [--lines 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daskstep.record import Workspace
from sidecar.store import LogStore

GOAL_SECONDS, GOAL_MB = 0.3, 100
BATCH = 50_000


def make_run(root: Path, lines: int) -> Path:
    """A finished run whose job log has `lines` lines; returns the raw copy, for the anchor."""
    run = Workspace(root).new_run()
    run.status_file.write_text(json.dumps({"run": 1, "status": "finished", "steps": []}))
    store = LogStore(run.logs)
    raw = root / "job-copy.log"
    with open(raw, "wb") as copy:
        for start in range(0, lines, BATCH):
            batch = [
                b"2026-12-03 12:00:00,000 - analysis - INFO - event %d processed, %d tracks\n"
                % (i, i % 97)
                for i in range(start, min(lines, start + BATCH))
            ]
            store.stream("job").append(batch)
            copy.write(b"".join(batch))
    store.close()
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="daskstep-bench-ui-", dir="/var/tmp"))
    server = None
    try:
        raw = make_run(root, args.lines)
        server = subprocess.Popen(
            [sys.executable, "-m", "daskstep", "ui", str(root), "--port", "0"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = server.stdout.readline().split()[-1] + "api/runs/0/1/log?stream=job"
        rss_before = psutil.Process(server.pid).memory_info().rss
        served, tailed = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as answer:
                page = json.loads(answer.read())
            served.append(time.perf_counter() - t)
            assert len(page["lines"]) == 200 and page["total"] == args.lines, page["total"]
            t = time.perf_counter()
            subprocess.run(["tail", "-n", "200", str(raw)], capture_output=True, check=True)
            tailed.append(time.perf_counter() - t)
        grown = (psutil.Process(server.pid).memory_info().rss - rss_before) / 2**20
        first, median = served[0], statistics.median(served)
        anchor = statistics.median(tailed)
        print(f"a log of {args.lines:,} lines ({raw.stat().st_size / 2**20:.0f} MB), "
              f"{args.rounds} rounds")  # fmt: skip
        print(f"  first page, first request      {first * 1000:7.1f} ms")
        print(f"  first page, median             {median * 1000:7.1f} ms")
        ratio = median / anchor
        print(f"  tail -n 200 (anchor), median   {anchor * 1000:7.1f} ms   ratio {ratio:.2f}x")
        print(f"  server memory grew by          {grown:7.1f} MB")
        met = max(served) < GOAL_SECONDS and grown < GOAL_MB
        print(f"goals: every page under {GOAL_SECONDS * 1000:.0f} ms, memory under {GOAL_MB} MB: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
