"""How fast does a cluster become usable, and go away, compared with the anchors?

Three ways to get the same 127.0.0.1 cluster (N workers, 1 thread, 2 GiB each, dashboard on):

- daskstep       daskstep's local backend as `daskstep run` starts it: with the run's own TLS
                 (its CA and certificates made inside the timed start), start() + wait_ready()
- daskstep tcp   the same with `--tls off`: what TLS costs is the difference
- LocalCluster   distributed.LocalCluster(processes=True) + Client.wait_for_workers(), the anchor
- dask CLI       `dask scheduler` + N x `dask worker`, each in its own process group

They run round-robin in this one process tree, so machine noise hits all of them alike. A stop
only counts when no process of the cluster is left: this process becomes a child subreaper, so
even orphans that lost their parent are found. Timings are medians; ratios are to LocalCluster.
Besides "ready" (all workers registered), "dashboard" (the /status page answers) is timed too, so
a backend cannot look fast by putting the dashboard off until after "ready". "compute" is what a
step pays once the cluster is up: a new Client connects and gathers 300 tiny tasks (with TLS,
every comm is encrypted).

    python bench/cluster_start.py [--rounds 5] [--workers 4] [--variants daskstep,localcluster,cli]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

THREADS = 1
MEMORY = "2Gi"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
LEFTOVER_GRACE = 10.0  # how long we wait for a leaked process before killing it ourselves
POLL = 0.05  # the same polling interval as daskstep's own wait_ready
GOAL_READY = 0.4
GOAL_STOP = 0.3
GOAL_READY_COMPUTE = 0.7  # what a step waits for: the cluster, then its first graph
GOAL_DASHBOARD = 1.0

Timings = tuple[float, float, float, float]  # ready, dashboard, compute, stop (seconds)
TASKS = 300


@dataclass
class Sample:
    ready: float | None = None
    dashboard: float | None = None
    compute: float | None = None
    stop: float | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)


@dataclass
class Variant:
    key: str
    label: str
    run: Callable[[int, Path], Timings]
    samples: list[Sample] = field(default_factory=list)


# --- process bookkeeping --------------------------------------------------------------------


def live_descendants() -> dict[int, psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                procs[p.pid] = p
    return procs


def describe(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())[:90] or p.name()
    except psutil.Error:
        cmd = "?"
    return f"pid {p.pid}: {cmd}"


def reap_zombies() -> None:
    """As a subreaper we inherit orphans; collect them once their own parents had the chance."""
    for p in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)


def leftovers_since(baseline: set[int]) -> list[psutil.Process]:
    return [p for pid, p in live_descendants().items() if pid not in baseline]


def clean_up(procs: list[psutil.Process]) -> None:
    """Leaks were already recorded; don't let them slow down or break the next rounds."""
    _, alive = psutil.wait_procs(procs, timeout=LEFTOVER_GRACE)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    reap_zombies()


# --- the three variants ---------------------------------------------------------------------
# Each returns (ready, dashboard, stop) seconds. "dashboard" is from the start until the dashboard
# answers 200; it is measured after "ready", so a dashboard loaded off the critical path shows.


def wait_dashboard(url: str | None, t0: float) -> float:
    if not url:
        raise RuntimeError("the cluster reported no dashboard URL")
    deadline = time.monotonic() + READY_TIMEOUT
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while True:
        with contextlib.suppress(OSError), opener.open(url, timeout=10) as response:
            if response.status == 200:
                return time.perf_counter() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard {url} did not answer within {READY_TIMEOUT:g} s")
        time.sleep(POLL)


def compute_through(address: str, security: object = None) -> float:
    """A step's view: connect, then gather many tiny tasks (round trips, not CPU)."""
    from distributed import Client

    t0 = time.perf_counter()
    with Client(address, security=security, timeout=READY_TIMEOUT) as client:
        client.gather(client.map(abs, range(TASKS)))
    return time.perf_counter() - t0


def run_daskstep(workers: int, tmp: Path, tls: bool = True) -> Timings:
    from daskstep.backends import get_backend
    from daskstep.backends.base import ClusterSpec
    from daskstep.tls import RunTLS

    spec = ClusterSpec(workers=workers, threads=THREADS, memory=MEMORY)
    backend = get_backend("local")
    try:
        t0 = time.perf_counter()
        if tls:
            backend.tls = RunTLS.create(tmp / "tls", "bench")
        handle = backend.start(spec, tmp)
        backend.wait_ready(workers, timeout=READY_TIMEOUT)
        ready = time.perf_counter() - t0
        dashboard = wait_dashboard(handle.dashboard_url, t0)
        security = backend.tls.security() if backend.tls else None
        compute = compute_through(handle.scheduler_address, security)
    finally:
        t1 = time.perf_counter()
        backend.stop()
        stop = time.perf_counter() - t1
    return ready, dashboard, compute, stop


def run_daskstep_tcp(workers: int, tmp: Path) -> Timings:
    return run_daskstep(workers, tmp, tls=False)


def run_localcluster(workers: int, tmp: Path) -> Timings:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=THREADS,
        memory_limit="2GiB",
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        local_directory=str(tmp),
    )
    client = None
    try:
        client = Client(cluster)
        client.wait_for_workers(workers, timeout=READY_TIMEOUT)
        ready = time.perf_counter() - t0
        dashboard = wait_dashboard(cluster.dashboard_link, t0)
        compute = compute_through(cluster.scheduler_address)
    finally:
        t1 = time.perf_counter()
        if client is not None:
            client.close()
        cluster.close()
        stop = time.perf_counter() - t1
    return ready, dashboard, compute, stop


def dask_cli() -> list[str]:
    """The `dask` script of the interpreter running us, so every variant uses one install."""
    script = Path(sys.executable).with_name("dask")
    if script.exists():
        return [str(script)]
    found = shutil.which("dask")
    if found is None:
        raise RuntimeError("no `dask` command next to the interpreter or on PATH")
    return [found]


async def wait_registered(scheduler_file: Path, workers: int, deadline: float) -> str:
    """Poll the scheduler until `workers` workers are registered; return its dashboard URL."""
    from distributed.core import rpc

    address = None
    while address is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            address = json.loads(scheduler_file.read_text())["address"]
        if address is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the scheduler never wrote its scheduler file")
            await asyncio.sleep(POLL)
    async with rpc(address, timeout=READY_TIMEOUT) as scheduler:
        while len((info := await scheduler.identity())["workers"]) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {workers} workers within {READY_TIMEOUT:g} s")
            await asyncio.sleep(POLL)
    return f"http://127.0.0.1:{info['services']['dashboard']}/status"


def stop_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process group, then wait until each process in them has exited."""
    members: list[psutil.Process] = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            members.extend(psutil.Process(p.pid).children(recursive=True))
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    psutil.wait_procs(members, timeout=STOP_TIMEOUT)


def run_cli(workers: int, tmp: Path) -> Timings:
    dask = dask_cli()
    sched_file = tmp / "scheduler.json"
    on_loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    scheduler = [*dask, "scheduler", *on_loopback, "--scheduler-file", str(sched_file)]
    scheduler += ["--port", "0"]
    worker = [*dask, "worker", *on_loopback, "--scheduler-file", str(sched_file)]
    worker += ["--nthreads", str(THREADS), "--memory-limit", MEMORY, "--local-directory", str(tmp)]
    commands = [("scheduler", scheduler)]
    commands += [(f"w{i}", [*worker, "--name", f"w{i}"]) for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as logs:
        try:
            t0 = time.perf_counter()
            for name, argv in commands:
                log = logs.enter_context(open(tmp / f"{name}.log", "wb"))
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=tmp,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group
                    )
                )
            deadline = time.monotonic() + READY_TIMEOUT
            url = asyncio.run(wait_registered(sched_file, workers, deadline))
            ready = time.perf_counter() - t0
            dashboard = wait_dashboard(url, t0)
            compute = compute_through(json.loads(sched_file.read_text())["address"])
        finally:
            t1 = time.perf_counter()
            stop_groups(procs)
            stop = time.perf_counter() - t1
    return ready, dashboard, compute, stop


# --- measuring and reporting ----------------------------------------------------------------


def measure(variant: Variant, workers: int) -> Sample:
    reap_zombies()
    baseline = set(live_descendants())
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{variant.key}-"))
    sample = Sample()
    try:
        sample.ready, sample.dashboard, sample.compute, sample.stop = variant.run(workers, tmp)
    except Exception as exc:
        sample.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    left = leftovers_since(baseline)  # right after stop() returned: it promised all is gone
    sample.leftovers = [describe(p) for p in left]
    clean_up(left)
    shutil.rmtree(tmp, ignore_errors=True)
    return sample


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def stats(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


METRICS = ("ready", "dashboard", "compute", "stop")


def report(
    variants: list[Variant],
    workers: int,
    rounds: int,
    anchor_key: str,
    goals: tuple[float, float] = (GOAL_READY, GOAL_STOP),
) -> list[str]:
    """Print the table; return the failures, one line each."""
    summary: dict[str, dict[str, tuple[float | None, float | None, float | None]]] = {}
    failures = []
    for v in variants:
        good = [s for s in v.samples if s.error is None and not s.leftovers]
        summary[v.key] = {
            m: stats([x for s in good if (x := getattr(s, m)) is not None]) for m in METRICS
        }
        for n, s in enumerate(v.samples, 1):
            if s.error:
                failures.append(f"{v.label} round {n}: {s.error}")
            if s.leftovers:
                failures.append(
                    f"{v.label} round {n}: stop left {len(s.leftovers)} process(es): "
                    + "; ".join(s.leftovers[:3])
                )

    anchor = summary.get(anchor_key)

    def ratio(key: str, metric: str) -> str:
        x, a = summary[key][metric][0], anchor[metric][0] if anchor else None
        return "-" if x is None or not a else f"{x / a:.2f}x"

    print()
    print(f"cluster start/stop: {workers} worker(s) x {THREADS} thread, {MEMORY}, dashboard on;")
    print(f"{rounds} round(s) round-robin, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print()
    anchor_label = next(v.label for v in variants if v.key == anchor_key)
    top = " " * 17 + "".join(f"  {m + ' (s)':^17}" for m in METRICS) + f"   vs {anchor_label}"
    block = "  " + " ".join(f"{h:>5}" for h in ("med", "min", "max"))
    head = f"{'variant':<13}{'ok':>4}" + block * len(METRICS)
    head += "   " + "".join(f"{m[:5]:>7}" for m in ("ready", "dash", "comp", "stop"))
    print(top)
    print(head)
    print("-" * len(head))
    for v in variants:
        ok = sum(1 for s in v.samples if s.error is None and not s.leftovers)
        line = f"{v.label:<13}{f'{ok}/{len(v.samples)}':>4}"
        for m in METRICS:
            line += "  " + " ".join(f"{fmt(x):>5}" for x in summary[v.key][m])
        line += "   " + "".join(f"{ratio(v.key, m):>7}" for m in METRICS)
        print(line)
    print("seconds. ready: start -> all workers registered; dashboard: start -> /status answers")
    print("200 (polled after ready); stop: stop called -> every process gone.")
    print(f"ratios: median / {anchor_label} median.")
    print()
    print(f"goal: ready <= {goals[0]}x {anchor_label}, stop <= {goals[1]}x")
    ds = summary.get("daskstep")
    if ds and anchor and None not in (ds["ready"][0], ds["stop"][0]):
        r = ds["ready"][0] / anchor["ready"][0]
        s = ds["stop"][0] / anchor["stop"][0]
        verdict = "met" if r <= goals[0] and s <= goals[1] else "NOT met"
        print(f"daskstep: ready {r:.2f}x, stop {s:.2f}x -> goal {verdict}")
        if anchor_key == "localcluster" and ds["compute"][0] and ds["dashboard"][0]:
            both = (ds["ready"][0] + ds["compute"][0]) / (anchor["ready"][0] + anchor["compute"][0])
            dash = ds["dashboard"][0] / anchor["dashboard"][0]
            ok = both <= GOAL_READY_COMPUTE and dash <= GOAL_DASHBOARD
            print(
                f"daskstep: ready + compute {both:.2f}x (goal <= {GOAL_READY_COMPUTE}x), "
                f"dashboard {dash:.2f}x (goal <= {GOAL_DASHBOARD}x) -> {'met' if ok else 'NOT met'}"
            )
    tcp = summary.get("daskstep-tcp")
    if ds and tcp:  # what the run's TLS costs, against the same backend on plain TCP
        costs = [
            f"{m} {ds[m][0] / tcp[m][0]:.2f}x ({(ds[m][0] - tcp[m][0]) * 1000:+.0f} ms)"
            for m in ("ready", "compute")
            if ds[m][0] and tcp[m][0]
        ]
        print("TLS cost (daskstep / daskstep tcp): " + ", ".join(costs))
    return failures


def daskstep_available() -> str | None:
    """None if the backend can be used, else why not."""
    repo = str(Path(__file__).resolve().parents[1])  # bench the checkout, even if not installed
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        from daskstep.backends import get_backend

        get_backend("local")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_rounds(variants: list[Variant], args: argparse.Namespace, dashboard: bool) -> None:
    """Warm-up rounds, then timed ones; in each, every variant in turn, so noise hits all."""
    for n in range(args.warmup + args.rounds):
        timed = n >= args.warmup
        tag = f"round {n - args.warmup + 1}/{args.rounds}" if timed else "warm-up"
        for v in variants:
            s = measure(v, args.workers)
            if timed:
                v.samples.append(s)
            status = s.error or (f"LEFT {len(s.leftovers)} PROCESSES" if s.leftovers else "ok")
            shown = f"dashboard {fmt(s.dashboard):>6} s  " if dashboard else ""
            print(
                f"{tag:<11} {v.label:<13} ready {fmt(s.ready):>6} s  "
                f"{shown}stop {fmt(s.stop):>6} s  {status}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    all_variants = {
        "daskstep": Variant("daskstep", "daskstep", run_daskstep),
        "daskstep-tcp": Variant("daskstep-tcp", "daskstep tcp", run_daskstep_tcp),
        "localcluster": Variant("localcluster", "LocalCluster", run_localcluster),
        "cli": Variant("cli", "dask CLI", run_cli),
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (cold caches)")
    parser.add_argument(
        "--variants",
        default="daskstep,daskstep-tcp,localcluster,cli",
        help=f"comma-separated, from: {','.join(all_variants)} (local backend)",
    )
    parser.add_argument("--backend", choices=("local", "docker"), default="local")
    parser.add_argument("--image", help="docker: the Dask image (with the dask CLI)")
    args = parser.parse_args(argv)
    if args.backend == "docker":
        import docker_start

        return docker_start.main(args, sys.modules[__name__])
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in all_variants]
    if unknown or not keys or args.rounds < 1 or args.workers < 1:
        parser.error(f"--variants takes {','.join(all_variants)}; --rounds/--workers >= 1")
    if "daskstep" in keys and (why := daskstep_available()):
        print(f"skipping daskstep: its local backend is not usable ({why})")
        keys.remove("daskstep")
    if "daskstep" in keys or "daskstep-tcp" in keys:
        from daskstep.secret_env import reexec_for_run, settle

        reexec_for_run(())  # as `daskstep run` does: the workers' hash seed, so it forks its
        settle()  # launcher (warm_launch.py); the anchors do not mind
    variants = [all_variants[k] for k in keys]
    if not variants:
        return 0

    from entrypoint.lifetime import become_subreaper  # orphans re-parent to us: leaks are seen

    subreaper = become_subreaper()
    # LocalCluster spawns workers and so starts multiprocessing's resource tracker, which lives
    # as long as we do; start it now so that it is part of every baseline, not a leak.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    import distributed  # noqa: F401  (imported once, here, so no variant pays for it)

    if not subreaper:
        print("note: no child subreaper here; orphaned processes may escape the leak check")
    run_rounds(variants, args, dashboard=True)

    failures = report(variants, args.workers, args.rounds, "localcluster")
    if failures:
        print()
        print("FAILURES:")
        for line in failures:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
