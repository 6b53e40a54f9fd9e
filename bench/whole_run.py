"""Is a whole `daskstep run` faster than doing the same job by hand?

What a user waits for is the whole command, from Enter to the prompt: the interpreter, the
cluster's start, the step, the stop, and whatever the run does at its end. Each phase's own
bench can look fine while the whole run is slower than the by-hand way. So both are timed as
whole processes, alternated in this one process tree:

- daskstep   `daskstep run reana.yaml`: a one-step workflow (`true`) on 4 workers, until the
             prompt is back (its report is drawn after that, by a process of its own; the
             bench waits for it, untimed, before the next variant)
- by hand    `python byhand.py`: a script that starts a LocalCluster of 4 workers, runs the
             same step with DASK_SCHEDULER_URI set, and closes the cluster

The figures are medians; the ratio is daskstep's over the by-hand script's.

    python bench/whole_run.py [--rounds 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GOAL = 0.8

BY_HAND = textwrap.dedent(
    """
    import os, subprocess, sys
    from distributed import LocalCluster

    if __name__ == "__main__":
        workers = int(sys.argv[1])
        with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit="1GiB",
                          processes=True, host="127.0.0.1") as cluster:
            env = {**os.environ, "DASK_SCHEDULER_URI": cluster.scheduler_address}
            code = subprocess.run(["sh", "-c", "true"], env=env).returncode
        sys.exit(code)
    """
)


def reana_yaml(workers: int) -> str:
    return textwrap.dedent(
        f"""
        workflow:
          type: serial
          resources:
            dask:
              image: docker.io/daskstep/bench:1
              number_of_workers: {workers}
              single_worker_memory: 1Gi
              single_worker_threads: 1
          specification:
            steps:
              - name: nothing
                commands: ["true"]
        """
    )


def timed(argv: list[str], folder: Path) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{argv[1]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def run_daskstep(folder: Path, workers: int) -> float:
    (folder / "reana.yaml").write_text(reana_yaml(workers))
    daskstep = Path(sys.executable).parent / "daskstep"
    seconds = timed([str(daskstep), "run", "reana.yaml"], folder)
    # the report is drawn once the prompt is back: not timed, but done before the next
    # variant starts, which it would slow down
    data = folder / ".daskstep" / "runs" / "1" / "report-data.json"
    deadline = time.monotonic() + 60
    while data.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return seconds


def run_by_hand(folder: Path, workers: int) -> float:
    (folder / "byhand.py").write_text(BY_HAND)
    return timed([sys.executable, "byhand.py", str(workers)], folder)


VARIANTS = {"daskstep": run_daskstep, "by hand": run_by_hand}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds + 1):  # the first round warms the disk cache: not counted
        order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            folder = Path(tempfile.mkdtemp(prefix="daskstep-bench-whole-"))
            try:
                seconds = VARIANTS[name](folder, args.workers)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if round_:
                samples[name].append(seconds)
                print(f"round {round_} {name:9} {seconds:.2f} s", flush=True)
    med = {name: statistics.median(v) for name, v in samples.items()}
    low = {name: min(v) for name, v in samples.items()}
    high = {name: max(v) for name, v in samples.items()}
    print(f"\nthe whole command, {args.workers} workers, step `true`, {args.rounds} rounds")
    for name in VARIANTS:
        print(f"{name:10} median {med[name]:5.2f} s  (min {low[name]:.2f}, max {high[name]:.2f})")
    ratio = med["daskstep"] / med["by hand"]
    print(f"{'ratio':10} {ratio:.2f}x   (goal: <= {GOAL}x)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
