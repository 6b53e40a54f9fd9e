"""Does an analysis compute as fast on daskstep's workers as on a LocalCluster's?

A fast start is worth nothing if the analysis then runs slower. The same step, a dask.array
matmul and then a dask.bag map, filter and count, runs on 4 workers x 1 thread:

- daskstep       `daskstep run` of a one-step reana.yaml on the local backend (its TLS on)
- LocalCluster   distributed.LocalCluster(processes=True) with the same step started as its
                 own process against it: the first anchor
- in-process     the analysis as a user's own script with its LocalCluster inside it (the
                 scheduler in the analysis's process): the second anchor

The step times itself (after connecting, so cluster start is not in it) and prints its timings
as one JSON line. The variants alternate in this one process tree, so machine noise hits all
alike; the figures are medians, and the ratios are daskstep's over each anchor's.

    python bench/workload.py [--rounds 3] [--workers 4] [--size 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

GOAL = 1.05
MEMORY = "2Gi"

STEP = textwrap.dedent(
    """
    import json, os, sys, time
    import dask.array as da
    import dask.bag as db
    from distributed import Client


    def main():
        size, workers = int(sys.argv[1]), int(sys.argv[2])
        if "DASK_SCHEDULER_URI" in os.environ:
            client = Client(os.environ["DASK_SCHEDULER_URI"])
        else:  # a user's own script: its cluster inside it
            from distributed import LocalCluster
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   memory_limit=sys.argv[3], host="127.0.0.1")
            client = Client(cluster)
        client.wait_for_workers(workers)
        t0 = time.perf_counter()
        x = da.random.RandomState(42).random_sample((size, size), chunks=size // 4)
        total = float((x @ x.T).sum().compute())
        t1 = time.perf_counter()
        words = db.from_sequence(range(400_000), npartitions=4 * workers)
        kept = words.map(lambda i: (i * 2654435761) % 1000).filter(lambda v: v % 3 == 0).count()
        count = int(kept.compute())
        t2 = time.perf_counter()
        print("WORKLOAD " + json.dumps({"matmul": t1 - t0, "bag": t2 - t1, "total": t2 - t0,
                                       "check": [round(total, -3), count]}), flush=True)
        client.close()


    if __name__ == "__main__":  # the in-process cluster's workers import this file
        main()
    """
)


def _timings(what: str, argv: list[str], **options: object) -> dict:
    """Run `argv` (which runs the step) and return the timings the step printed."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, **options)
    if res.returncode:
        raise RuntimeError(
            f"{what} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}"
        )
    for line in res.stdout.splitlines():
        if line.startswith("WORKLOAD "):
            return json.loads(line[len("WORKLOAD ") :])
    raise RuntimeError(f"the step printed no timings:\n{res.stdout[-2000:]}")


def run_daskstep(folder: Path, workers: int, size: int) -> dict:
    (folder / "step.py").write_text(STEP)
    (folder / "reana.yaml").write_text(
        textwrap.dedent(
            f"""
            workflow:
              type: serial
              resources:
                dask:
                  image: docker.io/daskstep/bench:1
                  number_of_workers: {workers}
                  single_worker_memory: {MEMORY}
                  single_worker_threads: 1
              specification:
                steps:
                  - name: workload
                    commands: ["python step.py {size} {workers}"]
            """
        )
    )
    daskstep = Path(sys.executable).parent / "daskstep"
    return _timings("daskstep run", [str(daskstep), "run", str(folder / "reana.yaml")])


def run_localcluster(folder: Path, workers: int, size: int) -> dict:
    from distributed import LocalCluster

    (folder / "step.py").write_text(STEP)
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        memory_limit=MEMORY.replace("Gi", "GiB"),
        processes=True,
        host="127.0.0.1",
    ) as cluster:
        env = {**os.environ, "DASK_SCHEDULER_URI": cluster.scheduler_address}
        argv = [sys.executable, "step.py", str(size), str(workers)]
        return _timings("the step on LocalCluster", argv, cwd=folder, env=env)


def run_in_process(folder: Path, workers: int, size: int) -> dict:
    (folder / "step.py").write_text(STEP)
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_URI"}
    argv = [sys.executable, "step.py", str(size), str(workers), MEMORY.replace("Gi", "GiB")]
    return _timings("the analysis with its LocalCluster", argv, cwd=folder, env=env)


VARIANTS = {
    "daskstep": run_daskstep,
    "LocalCluster": run_localcluster,
    "in-process": run_in_process,
}
ANCHORS = ("LocalCluster", "in-process")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--size", type=int, default=3000, help="matmul side (default 3000)")
    args = parser.parse_args()
    samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        names = list(VARIANTS)
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # each goes first
        for name in order:
            folder = Path(tempfile.mkdtemp(prefix=f"daskstep-bench-{name}-"))
            try:
                samples[name].append(VARIANTS[name](folder, args.workers, args.size))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"round {round_ + 1} {name:12} {samples[name][-1]['total']:.2f} s", flush=True)
    checks = {json.dumps(s["check"]) for v in samples.values() for s in v}
    if len(checks) != 1:
        print(f"the variants computed different results: {checks}")
        return 1
    print(
        f"\n{args.workers} workers x 1 thread, matmul {args.size}^2 then a bag of 400k, "
        f"medians of {args.rounds}"
    )
    print(f"{'':14}{'matmul':>9}{'bag':>9}{'total':>9}")
    med = {
        name: {k: statistics.median(s[k] for s in runs) for k in ("matmul", "bag", "total")}
        for name, runs in samples.items()
    }
    for name, m in med.items():
        print(f"{name:14}{m['matmul']:8.2f}s{m['bag']:8.2f}s{m['total']:8.2f}s")
    for anchor in ANCHORS:
        ratio = {k: med["daskstep"][k] / med[anchor][k] for k in ("matmul", "bag", "total")}
        print(
            f"{'/ ' + anchor:14}{ratio['matmul']:8.2f}x{ratio['bag']:8.2f}x"
            f"{ratio['total']:8.2f}x   (goal: total <= {GOAL}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
