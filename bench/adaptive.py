"""Does adaptive scaling save workers without slowing the analysis?

One two-phase step (a wide phase of many short tasks, then one long serial task, then the
result) on 4 workers x 1 thread at most:

- daskstep --adapt   `daskstep run --adapt` on the local backend (from 1 worker up to 4)
- daskstep fixed     `daskstep run`: 4 workers all along (the makespan's anchor)
- LocalCluster.adapt distributed's LocalCluster(...).adapt(minimum=1, maximum=4), the step
                     started as its own process against it (the peer)

With `--slurm`, on a one-node Slurm of our own (tests/slurm.py, as bench/batch_start.py), where
each worker is a batch job:

- slurm --adapt      `daskstep run --backend slurm --adapt` (from 0 jobs up to 4)
- slurm fixed        `daskstep run --backend slurm`: 4 jobs all along
- SLURMCluster.adapt dask-jobqueue's SLURMCluster(...).adapt(minimum=0, maximum=4) (the peer)

The step samples the scheduler's worker count every 0.25 s and prints its makespan (first
submit to last result) and worker-seconds (the count integrated over the makespan), as one JSON
line. `whole` is what the user waits for: the command from its start to the prompt (for the
peers, their cluster's start, the step and the close), in which the fixed cluster's wait for its
workers before the step counts too. Variants alternate, so noise hits all alike; medians are
printed, then the ratios.

    python bench/adaptive.py [--rounds 2] [--serial 30] [--slurm | --slurm-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

WORKERS = 4
GOALS = {"makespan": 1.1, "worker_seconds": 0.6}  # against the fixed cluster
SHOWN = {**GOALS, "whole": 1.1}  # and the whole command, from its start to the prompt

STEP = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from distributed import Client, wait

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), len(client.scheduler_info()["workers"])))
            time.sleep(0.25)

    def wide(i):
        time.sleep(0.1)
        return i * i

    def serial(seconds):
        time.sleep(seconds)
        return seconds

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.time()
    squares = client.map(wide, range(400), pure=False)
    wait(squares)
    client.submit(serial, float(sys.argv[1]), pure=False).result()
    total = client.submit(sum, squares).result()
    t1 = time.time()
    done.set()
    inside = [(t, n) for t, n in samples if t0 <= t <= t1]
    seconds = sum(n * (b[0] - a[0]) for (a, b), n in zip(zip(inside, inside[1:]),
                                                          (n for _, n in inside)))
    print("ADAPTIVE " + json.dumps({"makespan": t1 - t0, "worker_seconds": seconds,
                                    "check": total}), flush=True)
    """
)

REANA = """\
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
      - name: phases
        commands: ["python step.py {serial}"]
"""


def _timings(what: str, argv: list[str], **options: object) -> dict:
    began = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, **options)
    whole = time.monotonic() - began
    if res.returncode:
        raise RuntimeError(f"{what} failed ({res.returncode}):\n{res.stdout[-3000:]}")
    for line in res.stdout.splitlines():
        if line.startswith("ADAPTIVE "):
            return {**json.loads(line[len("ADAPTIVE ") :]), "whole": whole}
    raise RuntimeError(f"{what}: the step printed no figures:\n{res.stdout[-2000:]}")


def whole(started: float, figures: dict) -> dict:
    """A peer's whole time is its cluster's start, the step and its close, as our command's."""
    return {**figures, "whole": time.monotonic() - started}


def run_daskstep(folder: Path, serial: float, *flags: str) -> dict:
    (folder / "step.py").write_text(STEP)
    (folder / "reana.yaml").write_text(REANA.format(workers=WORKERS, serial=serial))
    daskstep = Path(sys.executable).parent / "daskstep"
    argv = [str(daskstep), "run", str(folder / "reana.yaml"), *flags]
    return _timings(f"daskstep run {' '.join(flags)}", argv)


def run_localcluster_adapt(folder: Path, serial: float) -> dict:
    from distributed import LocalCluster

    (folder / "step.py").write_text(STEP)
    started = time.monotonic()
    with LocalCluster(
        n_workers=1, threads_per_worker=1, memory_limit="1GiB", processes=True, host="127.0.0.1"
    ) as cluster:
        cluster.adapt(minimum=1, maximum=WORKERS)
        env = {**os.environ, "DASK_SCHEDULER_URI": cluster.scheduler_address}
        argv = [sys.executable, "step.py", str(serial)]
        figures = _timings("the step on LocalCluster.adapt()", argv, cwd=folder, env=env)
    return whole(started, figures)


def run_slurmcluster_adapt(folder: Path, serial: float) -> dict:
    """As dask-jobqueue's docs: one worker process (with its nanny) per job, 1 core, 1 GiB."""
    from dask_jobqueue import SLURMCluster

    (folder / "step.py").write_text(STEP)
    started = time.monotonic()
    with SLURMCluster(
        cores=1,
        processes=1,
        memory="1GiB",
        interface="lo",
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        log_directory=str(folder),
    ) as cluster:
        cluster.adapt(minimum=0, maximum=WORKERS)
        env = {**os.environ, "DASK_SCHEDULER_URI": cluster.scheduler_address}
        argv = [sys.executable, "step.py", str(serial)]
        figures = _timings("the step on SLURMCluster.adapt()", argv, cwd=folder, env=env)
    return whole(started, figures)


VARIANTS = {
    "daskstep --adapt": lambda folder, serial: run_daskstep(folder, serial, "--adapt"),
    "daskstep fixed": lambda folder, serial: run_daskstep(folder, serial),
    "LocalCluster.adapt": run_localcluster_adapt,
}
SLURM_VARIANTS = {
    "slurm --adapt": lambda f, s: run_daskstep(f, s, "--backend", "slurm", "--adapt"),
    "slurm fixed": lambda f, s: run_daskstep(f, s, "--backend", "slurm"),
    "SLURMCluster.adapt": run_slurmcluster_adapt,
}
COMPARED = {  # ours, its fixed-size anchor, its peer
    "daskstep --adapt": ("daskstep fixed", "LocalCluster.adapt"),
    "slurm --adapt": ("slurm fixed", "SLURMCluster.adapt"),
}


@contextlib.contextmanager
def our_slurm() -> Iterator[None]:
    """The tests' one-node Slurm, for sbatch and squeue, ours and dask-jobqueue's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from batch_start import slurm_module

    slurm = slurm_module()
    available, why = slurm.slurm_available()
    if not available:
        raise SystemExit(f"--slurm: no Slurm here: {why}")
    base = Path(tempfile.mkdtemp(prefix="daskstep-bench-adaptive-slurm-", dir="/var/tmp"))
    try:
        cluster = slurm._start(base)
        saved = dict(os.environ)
        os.environ.update(cluster.env)
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            slurm._stop(cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serial", type=float, default=30.0, help="the serial task's seconds")
    parser.add_argument("--slurm", action="store_true", help="the Slurm variants too")
    parser.add_argument("--slurm-only", action="store_true", help="only the Slurm variants")
    args = parser.parse_args()
    args.slurm |= args.slurm_only
    variants = {**({} if args.slurm_only else VARIANTS), **(SLURM_VARIANTS if args.slurm else {})}
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    with our_slurm() if args.slurm else contextlib.nullcontext():
        for round_ in range(args.rounds):
            names = list(variants)
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                folder = Path(tempfile.mkdtemp(prefix="daskstep-bench-adaptive-", dir="/var/tmp"))
                try:
                    samples[name].append(variants[name](folder, args.serial))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                last = samples[name][-1]
                print(f"round {round_ + 1} {name:20} {last['makespan']:6.1f} s "
                      f"{last['worker_seconds']:6.1f} worker-s {last['whole']:6.1f} s whole",
                      flush=True)  # fmt: skip
    if len({s["check"] for v in samples.values() for s in v}) != 1:
        print("the variants computed different results")
        return 1
    med = {
        name: {k: statistics.median(s[k] for s in runs) for k in SHOWN}
        for name, runs in samples.items()
    }
    print(f"\n400 tasks of 0.1 s, then one of {args.serial:g} s; medians of {args.rounds}")
    print(f"{'':22}{'makespan':>10}{'worker-s':>10}{'whole':>10}")
    for name, m in med.items():
        print(f"{name:22}{m['makespan']:9.1f}s{m['worker_seconds']:10.1f}{m['whole']:9.1f}s")
    for name, anchors in COMPARED.items():
        if name not in med:
            continue
        print(name)
        for anchor in anchors:
            ratio = {k: med[name][k] / med[anchor][k] for k in SHOWN}
            print(f"{'  / ' + anchor:22}{ratio['makespan']:9.2f}x{ratio['worker_seconds']:9.2f}x"
                  f"{ratio['whole']:9.2f}x")  # fmt: skip
    print(f"goals against the fixed cluster: makespan <= {GOALS['makespan']}x, worker-seconds "
          f"<= {GOALS['worker_seconds']}x; against the peer's adapt(): <= 1.0x each")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
