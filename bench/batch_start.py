"""How fast does a cluster of Slurm worker jobs become usable, and go away, compared with a
dask_jobqueue.SLURMCluster started by hand?

The same cluster (N worker jobs, one worker process with its nanny each, T threads, 512Mi, death
timeout 60 s, this interpreter) on a one-node Slurm of our own, which the bench starts first and
stops at the end (tests/slurm.py, imported from the checkout's tests folder):

- daskstep       BatchBackend(slurm): start() + wait_ready() = ready; stop() = stop (it cancels
                 the run's jobs, stops the scheduler and waits until squeue has let them go).
                 With its reaper, as users get it; `--variants ...,noreaper` adds one without.
- SLURMCluster   the anchor: SLURMCluster(...) + scale(N) + Client.wait_for_workers(N) = ready;
                 stop = close() + until `squeue --name` shows none of its jobs, which is what
                 daskstep's stop waits for. close() alone is printed too.

After ready, a fresh Client on the scheduler (what a step does) runs sum(range(1000)) ("first")
and then 100 tiny tasks ("tasks"): "felt" = ready + first is when a step gets its first result.
The variants alternate in this one process tree, so machine noise hits all alike. As in a
notebook, the anchor's scheduler lives in our process, with distributed, dask_jobqueue and bokeh
imported once (the warm-up round); daskstep starts a scheduler process per run, as it does.
Before each round the queue must be empty and no job process left; after each stop, a job still
queued, a process of a job, or one of ours (launcher, scheduler, reaper) counts as a leak.
Medians; ratios are to SLURMCluster.

    python bench/batch_start.py [--rounds 5] [--workers 3] [--variants daskstep,slurmcluster]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cluster_start as bench  # the sibling bench: process bookkeeping, formatting, medians
import psutil

THREADS = 1
MEMORY = "512Mi"
DEATH_TIMEOUT = 60  # daskstep's Site default; the anchor gets the same
READY_TIMEOUT = 120.0
SETTLE_TIMEOUT = 60.0  # between rounds: how long the queue may take to empty before we give up
TASKS = 100
GOAL_READY = 1.0
GOAL_STOP = 1.0
ANCHOR = "slurmcluster"
METRICS = ("ready", "first", "tasks", "felt", "stop")

Times = dict[str, float]


@dataclass
class Sample:
    times: Times = field(default_factory=dict)
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)


@dataclass
class Variant:
    key: str
    label: str
    run: Callable[[int, Path], Times]
    samples: list[Sample] = field(default_factory=list)


# --- the queue and the processes of jobs ---------------------------------------------------


def queued(name: str | None = None) -> list[str]:
    """Jobs still in the queue (pending, running, completing), as "ID NAME STATE" lines."""
    argv = ["squeue", "-h", "-o", "%i %j %T", *([f"--name={name}"] if name else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


def wait_queue_empty(name: str, timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll as daskstep's teardown does (every 0.1 s) until no job named `name` is queued."""
    deadline = time.monotonic() + timeout
    while queued(name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs named {name} still queued after {timeout:g} s")
        time.sleep(0.1)


def job_processes() -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(slurmstepd processes, the processes they run): what Slurm runs for jobs on this node."""
    stepds, inside = [], []
    for p in psutil.process_iter(["name"]):
        if p.info["name"] != "slurmstepd":
            continue
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                stepds.append(p)
            inside += [c for c in p.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    return stepds, inside


def settle(timeout: float = SETTLE_TIMEOUT) -> list[str]:
    """Wait until the queue is empty and no slurmstepd is left; past `timeout`, cancel and kill
    what is there, and say what it was (the round before leaked it)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs, (stepds, inside) = queued(), job_processes()
        if not jobs and not stepds and not inside:
            return []
        if time.monotonic() > deadline:
            break
        time.sleep(bench.POLL)
    left = jobs + [bench.describe(p) for p in stepds + inside]
    subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
    bench.clean_up(inside)
    return left


# --- the variants ---------------------------------------------------------------------------
# Each returns its times in seconds: ready, first, tasks and stop (the anchor also close).


def use(address: str) -> Times:
    """What a step does first: connect, get one result, then a burst of tiny tasks."""
    from distributed import Client

    t0 = time.perf_counter()
    with Client(address, timeout=READY_TIMEOUT) as client:
        if client.submit(sum, range(1000)).result() != 499500:
            raise RuntimeError("sum(range(1000)) came back wrong")
        t1 = time.perf_counter()
        futures = client.map(sum, [range(i, i + 1000) for i in range(TASKS)])
        if len(client.gather(futures)) != TASKS:
            raise RuntimeError(f"fewer than {TASKS} results")
        t2 = time.perf_counter()
    return {"first": t1 - t0, "tasks": t2 - t1}


def daskstep_variant(reaper: bool) -> Callable[[int, Path], Times]:
    def run(workers: int, tmp: Path) -> Times:
        from daskstep.backends.base import ClusterSpec
        from daskstep.backends.batch import BatchBackend
        from daskstep.batch import system_for
        from daskstep.batch.site import Site

        site = Site(death_timeout=DEATH_TIMEOUT)
        backend = BatchBackend(system_for("slurm", site), reaper=reaper)
        spec = ClusterSpec(workers=workers, threads=THREADS, memory=MEMORY)
        times: Times = {}
        try:
            t0 = time.perf_counter()
            handle = backend.start(spec, tmp)
            backend.wait_ready(workers, timeout=READY_TIMEOUT)
            times["ready"] = time.perf_counter() - t0
            times.update(use(handle.scheduler_address))
        finally:
            t1 = time.perf_counter()
            backend.stop()
            times["stop"] = time.perf_counter() - t1
        return times

    return run


def run_slurmcluster(workers: int, tmp: Path) -> Times:
    """By hand, as dask-jobqueue's docs do it; the worker as daskstep's (one process, nanny)."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    from daskstep.backends.base import ClusterSpec

    name = f"bench-{uuid.uuid4().hex[:8]}"
    memory = f"{ClusterSpec(memory=MEMORY).memory_bytes}B"  # the very bytes daskstep asks for
    times: Times = {}
    cluster: Any = None
    client: Any = None
    try:
        t0 = time.perf_counter()
        cluster = SLURMCluster(
            cores=THREADS,
            processes=1,
            memory=memory,
            job_name=name,
            interface="lo",
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
            death_timeout=DEATH_TIMEOUT,
            log_directory=str(tmp),
        )
        cluster.scale(workers)
        client = Client(cluster)
        client.wait_for_workers(workers, timeout=READY_TIMEOUT)
        times["ready"] = time.perf_counter() - t0
        times.update(use(cluster.scheduler_address))
    finally:
        t1 = time.perf_counter()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        times["close"] = time.perf_counter() - t1
        wait_queue_empty(name)
        times["stop"] = time.perf_counter() - t1
    return times


# --- measuring and reporting ----------------------------------------------------------------


def measure(variant: Variant, workers: int) -> Sample:
    sample = Sample()
    if stale := settle():
        sample.error = f"the queue was not empty before the round: {'; '.join(stale[:3])}"
        return sample
    bench.reap_zombies()
    baseline = set(bench.live_descendants())
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{variant.key}-"))
    try:
        sample.times = variant.run(workers, tmp)
        sample.times["felt"] = sample.times["ready"] + sample.times["first"]
    except Exception as exc:
        sample.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    # right after stop returned: it promised that the queue let every job go
    ours = bench.leftovers_since(baseline)
    _, inside = job_processes()
    sample.leftovers = [f"job {line}" for line in queued()]
    sample.leftovers += [bench.describe(p) for p in ours + inside]
    bench.clean_up(ours)
    if sample.leftovers:
        settle(timeout=0)  # recorded; cancel at once, not after a death timeout
    shutil.rmtree(tmp, ignore_errors=True)
    return sample


def run_rounds(variants: list[Variant], args: argparse.Namespace) -> None:
    """As cluster_start.run_rounds: warm-up rounds, then timed ones, every variant in turn."""
    for n in range(args.warmup + args.rounds):
        timed = n >= args.warmup
        tag = f"round {n - args.warmup + 1}/{args.rounds}" if timed else "warm-up"
        for v in variants:
            s = measure(v, args.workers)
            if timed:
                v.samples.append(s)
            status = s.error or (f"LEFT {len(s.leftovers)}" if s.leftovers else "ok")
            shown = "  ".join(
                f"{m} {bench.fmt(s.times.get(m)):>5} s" for m in ("ready", "first", "tasks", "stop")
            )
            close = f"  (close {bench.fmt(s.times['close'])} s)" if "close" in s.times else ""
            print(f"{tag:<11} {v.label:<13} {shown}{close}  {status}", flush=True)


def summarize(v: Variant, metric: str) -> tuple[float | None, float | None, float | None]:
    good = [s for s in v.samples if s.error is None and not s.leftovers]
    return bench.stats([s.times[metric] for s in good if metric in s.times])


def report(variants: list[Variant], args: argparse.Namespace, slurm_version: str) -> list[str]:
    """Print the table in cluster_start's layout; return the failures, one line each."""
    anchor = next((v for v in variants if v.key == ANCHOR), None)

    def ratio(v: Variant, metric: str) -> str:
        x = summarize(v, metric)[0]
        a = summarize(anchor, metric)[0] if anchor else None
        return "-" if x is None or not a else f"{x / a:.2f}x"

    print()
    print(
        f"batch start/stop on {slurm_version}: {args.workers} worker job(s) x {THREADS} thread, "
        f"{MEMORY},"
    )
    print(
        f"one process + nanny each, death timeout {DEATH_TIMEOUT} s; {args.rounds} round(s) "
        f"alternated, {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    print()
    top = " " * 17 + "".join(f"  {m + ' (s)':^17}" for m in METRICS)
    top += f"   vs {anchor.label}" if anchor else ""
    block = "  " + " ".join(f"{h:>5}" for h in ("med", "min", "max"))
    head = f"{'variant':<13}{'ok':>4}" + block * len(METRICS)
    head += "   " + "".join(f"{m:>7}" for m in METRICS)
    print(top)
    print(head)
    print("-" * len(head))
    for v in variants:
        ok = sum(1 for s in v.samples if s.error is None and not s.leftovers)
        line = f"{v.label:<13}{f'{ok}/{len(v.samples)}':>4}"
        for m in METRICS:
            line += "  " + " ".join(f"{bench.fmt(x):>5}" for x in summarize(v, m))
        line += "   " + "".join(f"{ratio(v, m):>7}" for m in METRICS)
        print(line)
    print("seconds. ready: start -> all workers registered; first: a new Client -> the result of")
    print(f"sum(range(1000)); tasks: {TASKS} more tiny tasks; felt: ready + first; stop: stop")
    print("called -> no job of the cluster in squeue (SLURMCluster: close() + that wait).")
    if anchor:
        close, stop = summarize(anchor, "close"), summarize(anchor, "stop")
        later = "-" if None in (close[0], stop[0]) else f"{stop[0] - close[0]:.2f}"  # type: ignore[operator]
        print(
            f"{anchor.label} close() alone: med {bench.fmt(close[0])}, min {bench.fmt(close[1])}, "
            f"max {bench.fmt(close[2])} s; the queue was empty {later} s later (medians)."
        )
        print(f"ratios: median / {anchor.label} median.")
        print()
        print(f"goal: ready <= {GOAL_READY}x {anchor.label}, stop <= {GOAL_STOP}x")
        for v in variants:
            ready, stop_ = summarize(v, "ready")[0], summarize(v, "stop")[0]
            a_ready, a_stop = summarize(anchor, "ready")[0], summarize(anchor, "stop")[0]
            if v is anchor or None in (ready, stop_, a_ready, a_stop):
                continue
            r, s = ready / a_ready, stop_ / a_stop  # type: ignore[operator]
            verdict = "met" if r <= GOAL_READY and s <= GOAL_STOP else "NOT met"
            vs_close = f", stop vs close() alone {stop_ / close[0]:.2f}x" if close[0] else ""
            print(f"{v.label}: ready {r:.2f}x, stop {s:.2f}x -> goal {verdict}{vs_close}")
    failures = []
    for v in variants:
        for n, s in enumerate(v.samples, 1):
            if s.error:
                failures.append(f"{v.label} round {n}: {s.error}")
            if s.leftovers:
                failures.append(
                    f"{v.label} round {n}: stop left {len(s.leftovers)}: "
                    + "; ".join(s.leftovers[:3])
                )
    return failures


# --- our own Slurm --------------------------------------------------------------------------


def slurm_module() -> Any:
    """tests/slurm.py: the tests' one-node Slurm, so that the bench measures the same one."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import slurm

    return slurm


def main(argv: list[str] | None = None) -> int:
    all_variants = {
        "daskstep": Variant("daskstep", "daskstep", daskstep_variant(reaper=True)),
        "noreaper": Variant("noreaper", "no reaper", daskstep_variant(reaper=False)),
        ANCHOR: Variant(ANCHOR, "SLURMCluster", run_slurmcluster),
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (cold caches)")
    parser.add_argument(
        "--variants",
        default=f"daskstep,{ANCHOR}",
        help=f"comma-separated, from: {','.join(all_variants)}",
    )
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    if any(k not in all_variants for k in keys) or not keys or args.rounds < 1 or args.workers < 1:
        parser.error(f"--variants takes {','.join(all_variants)}; --rounds/--workers >= 1")
    if why := bench.daskstep_available():  # also puts the checkout first on sys.path
        print(f"cannot bench: daskstep is not usable ({why})")
        return 1
    slurm = slurm_module()
    available, why = slurm.slurm_available()
    if available and os.geteuid() != 0:
        available, why = False, "the test Slurm runs its daemons as root"
    if not available:
        print(f"skipping the Slurm bench: {why}")
        return 0
    import dask_jobqueue  # noqa: F401  (imported once, here, so no variant pays for it)
    import distributed  # noqa: F401

    # the anchor's scheduler logs here; its INFO tracebacks of comms closed at close() are noise
    logging.getLogger("distributed").setLevel(logging.WARNING)

    from entrypoint.lifetime import become_subreaper

    base = Path(tempfile.mkdtemp(prefix="daskstep-bench-slurm-", dir="/var/tmp"))
    try:
        cluster = slurm._start(base)  # daemonized before we are a subreaper: not our children
        os.environ.update(cluster.env)  # for sbatch, squeue and scancel, ours and theirs
        version = cluster.run("sinfo", "--version").strip()
        if not become_subreaper():  # orphans (a forked scheduler) re-parent to us: leaks show
            print("note: no child subreaper here; orphaned processes may escape the leak check")
        try:
            run_rounds([all_variants[k] for k in keys], args)
            failures = report([all_variants[k] for k in keys], args, version)
        finally:
            slurm._stop(cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    stepds, inside = job_processes()
    left = [bench.describe(p) for p in stepds + inside + list(bench.live_descendants().values())]
    print()
    print("left running at the end: " + ("; ".join(left) if left else "nothing"))
    if failures or left:
        print()
        print("FAILURES:")
        for line in failures + [f"left running at the end: {p}" for p in left]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
