"""What runs in the processes the launcher forks: the scheduler and the workers, each on an event
loop of its own, with their output in their own log file (launcher.py supervises them)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from daskstep import procutil
from daskstep.backends import unix_comm
from daskstep.backends.cluster_side import (
    TASK_COUNTS_OP,
    WORKERS_OP,
    security_of,
    task_counts,
    workers_when,
)

STOP_GRACE_SECONDS = 3.0
# what ps, top and psutil's name() show (at most 15 characters): forked, all would show the
# name of the process they came from
LAUNCHER_NAME, SCHEDULER_NAME, WORKER_NAME = "ds-launcher", "ds-scheduler", "ds-worker"
# Dask's own light collections (about 0.1 s to import), imported by the scheduler and each worker
# once they have registered: a process that starts once and serves many graphs should not make
# the first of them wait (LocalCluster's scheduler shares the client's imports).
WARM_MODULES = ("dask.array", "dask.bag")


@dataclass
class Config:
    workers: int
    threads: int
    memory_limit: int
    log_dir: str
    death_timeout: float = 30.0
    environment: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where the scheduler listens (batch workers reach it from afar)
    scheduler_file: str | None = None  # written once it listens: batch workers wait for it
    tls: str | None = None  # the run's TLS folder: the cluster's side of its TLS


def _redirect_output(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def fork(name: str, log_path: str, body: Any, *args: Any) -> int:
    """Fork a child that runs `body(*args)` with its output in `log_path`; never returns in it."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _redirect_output(log_path)
        procutil.set_name(name)
        procutil.die_with_parent(signal.SIGTERM, expected_parent=parent)
        # Not asyncio.run: it would wait for executor threads (e.g. a dashboard still loading)
        # after the server has closed, which only delays the stop.
        code = asyncio.new_event_loop().run_until_complete(body(*args)) or 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _close_on_sigterm(server: Any) -> None:
    """Close gracefully on SIGTERM; if that hangs, SIGALRM's default action ends the process."""

    closing: list[asyncio.Future] = []

    def handler() -> None:
        signal.alarm(int(STOP_GRACE_SECONDS) + 2)
        closing.append(asyncio.ensure_future(server.close()))

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, handler)


async def scheduler_main(report_fd: int, cfg: Config, local_directory: str) -> int:
    """`local_directory`: the launcher's private folder (else dask's shared `dask-scratch-space`
    in the temporary folder, which outlives the run)."""
    from distributed import Scheduler

    host = cfg.host
    security = security_of(cfg.tls)
    protocol = "tls" if security else "tcp"  # for the analysis's Client, and remote workers
    private = unix_comm.SCHEME if os.environ.get(unix_comm.SOCKETS_VARIABLE) else None
    scheduler = Scheduler(
        scheduler_file=cfg.scheduler_file,
        security=security,
        protocol=[protocol, private] if private else protocol,
        host=[host, None] if private else host,
        port=[0, None] if private else 0,
        dashboard_address=f"{host}:0" if ":" not in host else f"[{host}]:0",
        dashboard=False,  # attached below, off the critical path
        local_directory=local_directory,
    )
    scheduler.handlers[TASK_COUNTS_OP] = lambda: task_counts(scheduler)

    async def workers(at_least: int, seen: int, wait: float) -> int:  # a handler has a name
        return await workers_when(scheduler, at_least, seen, wait)

    scheduler.handlers[WORKERS_OP] = workers
    await scheduler
    _close_on_sigterm(scheduler)
    port = scheduler.http_server.port if scheduler.http_server else None
    internal = scheduler.listeners[-1].contact_address if private else scheduler.address
    info = {"address": scheduler.address, "internal": internal, "http_port": port}
    os.write(report_fd, json.dumps(info).encode())
    os.close(report_fd)
    warming = asyncio.ensure_future(_warm_up_scheduler(scheduler))
    await scheduler.finished()
    del warming
    return 0


async def _import_off_the_loop(*modules: str) -> list[Any]:
    """Import in a thread while the event loop goes on serving (it gets the GIL more often).
    Not niced: at nice 19 the local dashboard came up 9% later than LocalCluster's, and on
    Slurm the batch bench could not tell the difference."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(interval / 10)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, import_all, modules)
    finally:
        sys.setswitchinterval(interval)


def import_all(modules: tuple[str, ...]) -> list[Any]:
    imported = []
    for name in modules:
        with contextlib.suppress(ImportError):  # one this environment lacks: nothing to warm
            imported.append(importlib.import_module(name))
    return imported


async def _warm_up_scheduler(scheduler: Any) -> None:
    """Off the critical path, once the scheduler takes workers: the collections whose graphs it
    will unpickle, then the dashboard (bokeh).

    A module imported in a background thread while another thread imports the same package can
    be seen half-made ("cannot import name 'arange' from partially initialized module"; seen
    in 2 runs of 8 of bench/workload.py, when a worker warmed up beside the first task). So
    graphs wait for the collections, and the dashboard, whose modules are disjoint from
    theirs, comes after.
    """
    collections = asyncio.ensure_future(_import_off_the_loop(*WARM_MODULES))
    _hold_graphs_until(scheduler, collections)
    await asyncio.wait([collections])
    try:
        [module] = await _import_off_the_loop("distributed.dashboard.scheduler")
        module.connect(scheduler.http_application, scheduler.http_server, scheduler)
        print("daskstep: dashboard attached", file=sys.stderr, flush=True)
    except Exception as e:  # a dashboard problem must never take the scheduler down
        print(f"daskstep: dashboard unavailable: {e}", file=sys.stderr, flush=True)


def _hold_graphs_until(scheduler: Any, done: asyncio.Future) -> None:
    """Graphs are unpickled in update-graph (and materialized in a thread it starts); a graph
    that comes early waits there, in order, and the handler goes back once `done` is."""
    original = scheduler.stream_handlers["update-graph"]

    async def update_graph(**message: Any) -> Any:
        await asyncio.wait([done])
        return await original(**message)

    scheduler.stream_handlers["update-graph"] = update_graph
    done.add_done_callback(lambda _: scheduler.stream_handlers.update({"update-graph": original}))


async def worker_main(address: str, name: str, cfg: Config, local_directory: str) -> int:
    """`address`: the scheduler's private socket when it has one (then the worker listens on
    one of its own too, and needs no TLS: its contexts cost each worker's start 15 ms), else
    its TCP/TLS address."""
    os.environ.update(cfg.environment)
    from distributed import Worker

    private = address.startswith(unix_comm.PREFIX)

    worker = Worker(
        address,
        name=name,
        nthreads=cfg.threads,
        memory_limit=cfg.memory_limit,
        death_timeout=cfg.death_timeout,
        security=None if private else security_of(cfg.tls),
        host=None if private else "127.0.0.1",
        dashboard_address="127.0.0.1:0",
        local_directory=local_directory,
    )
    await worker
    _close_on_sigterm(worker)
    if not all(name in sys.modules for name in WARM_MODULES):  # a restarted worker has them
        _warm_up_holding_the_loop()
    await worker.finished()
    return 0


def _warm_up_holding_the_loop() -> None:
    """Registered, so it counts as ready; now the collections, at the lowest CPU priority (that
    thread only) so the workers still starting come first. The event loop waits for it, so no
    task is unpickled meanwhile: a module imported in a thread while another thread imports the
    same package can be seen half-made, and the worker dies (see _warm_up_scheduler). No task
    can have come yet: the step starts only once every worker has registered."""

    def warm_up() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        import_all(WARM_MODULES)

    # Meanwhile the loop cannot close the worker, and a short run's stop waited for four
    # niced imports (0.7 s of a 0.8 s stop). A worker warming up holds no task: it may go now.
    previous = signal.signal(signal.SIGTERM, _exit_at_once)
    thread = threading.Thread(target=warm_up, name="daskstep-warm-up")
    thread.start()
    thread.join()
    signal.signal(signal.SIGTERM, previous)


def _exit_at_once(signum: int, frame: object) -> None:
    with contextlib.suppress(Exception):
        print("daskstep: stopped while warming up (no task had come)", file=sys.stderr)
        sys.stderr.flush()
    os._exit(0)
