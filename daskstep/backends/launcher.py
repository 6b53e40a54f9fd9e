"""The local backend's launcher: one process that imports `distributed` once, then forks the
scheduler and the workers from that warm image and supervises them.

Why a separate process: it starts with no threads (so forking is safe), it outlives nothing
(stdin EOF means the controller is gone, so it tears everything down), and it is the parent the
kernel signals its children about (PR_SET_PDEATHSIG). It also plays the part of dask's Nanny
for all workers at once: it restarts a worker that dies and kills one that exceeds its memory
budget, without a second process per worker.

Protocol: one JSON config line on stdin, then "stop" (or EOF). Events as JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import selectors
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from daskstep import procutil
from daskstep.backends.cluster_side import TASK_COUNTS_OP, security_of, task_counts

QUICK_EXIT_SECONDS = 10.0  # a worker that dies sooner than this after starting is crash-looping
MAX_QUICK_EXITS = 5
STOP_GRACE_SECONDS = 3.0
# how often each worker's memory is read (one psutil call each): dask's Nanny reads it every
# 100 ms; once a second let a worker run a second past its budget, and the kill come late
MEMORY_CHECK_SECONDS = 0.2
# Dask's own light collections (about 0.1 s to import), imported by the scheduler and each worker
# once they have registered: a process that starts once and serves many graphs should not make
# the first of them wait (LocalCluster's scheduler shares the client's imports).
WARM_MODULES = ("dask.array", "dask.bag")


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class WorkerState:
    name: str
    pid: int = 0
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    given_up: bool = False


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


def _fork(log_path: str, body: Any, *args: Any) -> int:
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


async def _scheduler_main(report_fd: int, cfg: Config) -> int:
    from distributed import Scheduler

    host = cfg.host
    security = security_of(cfg.tls)
    scheduler = Scheduler(
        scheduler_file=cfg.scheduler_file,
        security=security,
        protocol="tls" if security else None,
        host=host,
        port=0,
        dashboard_address=f"{host}:0" if ":" not in host else f"[{host}]:0",
        dashboard=False,  # attached below, off the critical path
    )
    scheduler.handlers[TASK_COUNTS_OP] = lambda: task_counts(scheduler)
    await scheduler
    _close_on_sigterm(scheduler)
    port = scheduler.http_server.port if scheduler.http_server else None
    os.write(report_fd, json.dumps({"address": scheduler.address, "http_port": port}).encode())
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
        return await asyncio.get_running_loop().run_in_executor(None, _import_all, modules)
    finally:
        sys.setswitchinterval(interval)


def _import_all(modules: tuple[str, ...]) -> list[Any]:
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


async def _worker_main(address: str, name: str, cfg: Config, local_directory: str) -> int:
    os.environ.update(cfg.environment)
    from distributed import Worker

    worker = Worker(
        address,
        name=name,
        nthreads=cfg.threads,
        memory_limit=cfg.memory_limit,
        death_timeout=cfg.death_timeout,
        security=security_of(cfg.tls),
        host="127.0.0.1",
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
        _import_all(WARM_MODULES)

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


class Launcher:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.address = ""
        self.scheduler_pid = 0
        self.workers = {f"worker-{i}": WorkerState(f"worker-{i}") for i in range(cfg.workers)}
        self.stop_reason = ""
        self.local_directory = tempfile.mkdtemp(prefix="daskstep-")
        import dask

        self.terminate_fraction = dask.config.get("distributed.worker.memory.terminate")

    def start_scheduler(self) -> None:
        r, w = os.pipe()
        log = os.path.join(self.cfg.log_dir, "scheduler.log")
        self.scheduler_pid = _fork(log, _scheduler_main, w, self.cfg)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        if not data:
            raise RuntimeError(f"the scheduler did not start; see {log}")
        info = json.loads(data)
        self.address = info["address"]
        emit("scheduler", address=self.address, pid=self.scheduler_pid, http_port=info["http_port"])

    def start_worker(self, state: WorkerState) -> None:
        if state.started_at:  # a restart: fork it warm (the first ones warm up once registered)
            _import_all(WARM_MODULES)
        log = os.path.join(self.cfg.log_dir, "workers", f"{state.name}.log")
        state.pid = _fork(
            log, _worker_main, self.address, state.name, self.cfg, self.local_directory
        )
        state.started_at = time.monotonic()
        state.restart_at = None
        emit("worker", name=state.name, pid=state.pid)

    def on_exit(self, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if pid == self.scheduler_pid:
            self.scheduler_pid = 0
            emit("scheduler-exited", code=code)
            self.stop_reason = self.stop_reason or f"scheduler exited with {code}"
            return
        for state in self.workers.values():
            if state.pid == pid:
                state.pid = 0
                emit("worker-exited", name=state.name, code=code)
                if not self.stop_reason:
                    self._plan_restart(state, code)

    def _plan_restart(self, state: WorkerState, code: int) -> None:
        """A worker the scheduler closed (`Client.restart()`) exits 0 and is back at once, as a
        Nanny brings it back. A crash counts: one that keeps crashing backs off, then gives up."""
        if code == 0:
            state.restart_at = time.monotonic()
            return
        quick = time.monotonic() - state.started_at < QUICK_EXIT_SECONDS
        state.quick_exits = state.quick_exits + 1 if quick else 0
        if state.quick_exits > MAX_QUICK_EXITS:
            state.given_up = True
            emit("worker-given-up", name=state.name, exits=state.quick_exits)
            return
        delay = min(0.5 * 2**state.quick_exits, 10.0) if quick else 0.0
        state.restart_at = time.monotonic() + delay

    def check_memory(self) -> None:
        """What dask's Nanny does: a worker past the terminate fraction is killed and restarted."""
        if not self.terminate_fraction:
            return
        budget = self.terminate_fraction * self.cfg.memory_limit
        for state in self.workers.values():
            if not state.pid:
                continue
            try:
                rss = psutil.Process(state.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > budget:
                log = os.path.join(self.cfg.log_dir, "workers", f"{state.name}.log")
                with open(log, "a") as f:
                    f.write(
                        f"daskstep: worker {state.name} (pid={state.pid}) uses {rss} bytes, past "
                        f"{self.terminate_fraction:.0%} of its {self.cfg.memory_limit}-byte limit; "
                        "restarting it\n"
                    )
                emit(
                    "worker-memory-exceeded",
                    name=state.name,
                    rss=rss,
                    limit=self.cfg.memory_limit,
                    fraction=self.terminate_fraction,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(state.pid, signal.SIGKILL)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, status)

    def restart_due(self) -> None:
        now = time.monotonic()
        for state in self.workers.values():
            if state.restart_at is not None and now >= state.restart_at and not self.stop_reason:
                self.start_worker(state)

    def teardown(self) -> None:
        """Workers first (they unregister), then the scheduler; then kill whatever is left."""
        worker_pids = [s.pid for s in self.workers.values() if s.pid]
        for pids in (worker_pids, [self.scheduler_pid] if self.scheduler_pid else []):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                self.reap()
                time.sleep(0.01)
        procutil.kill_tree(p.pid for p in psutil.Process().children())
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and psutil.Process().children():
            self.reap()
            time.sleep(0.01)
        shutil.rmtree(self.local_directory, ignore_errors=True)

    def supervise(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        sel = selectors.DefaultSelector()
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "control")
        sel.register(rfd, selectors.EVENT_READ, "signal")
        last_memory_check = 0.0
        while not self.stop_reason:
            for key, _ in sel.select(timeout=MEMORY_CHECK_SECONDS):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(rfd, 4096)
                    continue
                data = os.read(key.fd, 4096)
                if not data:
                    self.stop_reason = "the controller is gone"
                elif b"stop" in data:
                    self.stop_reason = "stop requested"
            self.reap()
            self.restart_due()
            if time.monotonic() - last_memory_check >= MEMORY_CHECK_SECONDS:
                self.check_memory()
                last_memory_check = time.monotonic()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.stop_reason = self.stop_reason or f"signal {signal.Signals(signum).name}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main() -> int:
    cfg = Config(**json.loads(sys.stdin.readline()))
    procutil.become_subreaper()
    import distributed  # noqa: F401  (the whole point: children fork from a warm image)

    launcher = Launcher(cfg)
    try:
        launcher.start_scheduler()
        for state in launcher.workers.values():
            launcher.start_worker(state)
        launcher.supervise()
    except Exception as e:
        emit("error", message=str(e))
        launcher.stop_reason = str(e)
    finally:
        launcher.teardown()
        emit("stopped", reason=launcher.stop_reason)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()  # stdout is flushed by emit()
    # Everything is stopped and said: skip the interpreter's shutdown, 80-300 ms with
    # distributed imported, which every stop of the cluster would otherwise wait for.
    os._exit(code)
