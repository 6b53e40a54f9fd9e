"""The local backend's launcher: one process that imports `distributed` once, then forks the
scheduler and the workers from that warm image and supervises them.

Why a separate process: it starts with no threads (so forking is safe), it outlives nothing
(stdin EOF means the controller is gone, so it tears everything down), and it is the parent the
kernel signals its children about (PR_SET_PDEATHSIG). It also plays the part of dask's Nanny
for all workers at once: it restarts a worker that dies and kills one that exceeds its memory
budget, without a second process per worker.

Protocol: one JSON config line on stdin, then command lines: "add NAME" (one more worker, for
adaptive scaling), "retire NAME" (the scheduler is about to retire it: once it exits, it is not
restarted), "keep NAME" (the retirement did not happen), "stop" (or EOF). Events as JSON lines
on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import psutil

from daskstep import procutil
from daskstep.backends import unix_comm
from daskstep.backends.forked import (
    LAUNCHER_NAME,
    SCHEDULER_NAME,
    STOP_GRACE_SECONDS,
    WARM_MODULES,
    WORKER_NAME,
    Config,
    fork,
    import_all,
    scheduler_main,
    worker_main,
)

QUICK_EXIT_SECONDS = 10.0  # a worker that dies sooner than this after starting is crash-looping
MAX_QUICK_EXITS = 5
# how often each worker's memory is read (one psutil call each): dask's Nanny reads it every
# 100 ms; once a second let a worker run a second past its budget, and the kill come late
MEMORY_CHECK_SECONDS = 0.2


def emit(event: str, **fields: Any) -> None:
    """One event for the controller. Once it is gone (its end of the pipe closed: it was
    killed), events go nowhere: a teardown that stopped at the first one left the cluster's
    private folder (its sockets, the workers' spilled data) behind."""
    try:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()
    except OSError:  # BrokenPipeError, mostly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the buffered rest is dropped there too
        os.close(devnull)


@dataclass
class WorkerState:
    name: str
    pid: int = 0
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    given_up: bool = False
    retiring: bool = False  # exits for good: the autoscaler retires it


class Launcher:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.address = ""
        self.internal = ""
        self.scheduler_pid = 0
        self.workers = {f"worker-{i}": WorkerState(f"worker-{i}") for i in range(cfg.workers)}
        self.stop_reason = ""
        self.local_directory = tempfile.mkdtemp(prefix="daskstep-")  # 0700: ours alone
        if unix_comm.usable_folder(self.local_directory):  # else TCP/TLS, as remote workers
            os.environ[unix_comm.SOCKETS_VARIABLE] = self.local_directory
        import dask

        self.terminate_fraction = dask.config.get("distributed.worker.memory.terminate")

    def start_scheduler(self) -> None:
        r, w = os.pipe()
        log = os.path.join(self.cfg.log_dir, "scheduler.log")
        here = self.local_directory
        self.scheduler_pid = fork(SCHEDULER_NAME, log, scheduler_main, w, self.cfg, here)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        if not data:
            raise RuntimeError(f"the scheduler did not start; see {log}")
        info = json.loads(data)
        self.address = info["address"]
        self.internal = info["internal"]  # the workers' way in: see unix_comm
        emit("scheduler", address=self.address, pid=self.scheduler_pid, http_port=info["http_port"])

    def start_worker(self, state: WorkerState) -> None:
        if state.started_at:  # a restart: fork it warm (the first ones warm up once registered)
            import_all(WARM_MODULES)
        log = os.path.join(self.cfg.log_dir, "workers", f"{state.name}.log")
        address, cfg, here = self.internal, self.cfg, self.local_directory
        state.pid = fork(WORKER_NAME, log, worker_main, address, state.name, cfg, here)
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
        for state in list(self.workers.values()):
            if state.pid == pid and state.retiring:
                del self.workers[state.name]
                emit("worker-retired", name=state.name, code=code)
            elif state.pid == pid:
                state.pid = 0
                emit("worker-exited", name=state.name, code=code)
                if not self.stop_reason:
                    self._plan_restart(state, code)

    def command(self, line: str) -> None:
        """One line of the controller's."""
        verb, _, name = line.strip().partition(" ")
        if verb == "stop":
            self.stop_reason = "stop requested"
        elif verb == "add" and name and name not in self.workers:
            self.workers[name] = state = WorkerState(name)
            self.start_worker(state)
        elif verb in ("retire", "keep") and name in self.workers:
            self.workers[name].retiring = verb == "retire"

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
        last_memory_check, pending = 0.0, b""
        while not self.stop_reason:
            for key, _ in sel.select(timeout=MEMORY_CHECK_SECONDS):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(rfd, 4096)
                    continue
                data = os.read(key.fd, 4096)
                if not data:
                    self.stop_reason = "the controller is gone"
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self.command(line.decode(errors="replace"))
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
    """As an executed process: the config is the first line on stdin."""
    return serve(Config(**json.loads(sys.stdin.readline())))


def serve(cfg: Config) -> int:
    """The launcher's life, executed or forked from the controller (warm_launch.py)."""
    procutil.set_name(LAUNCHER_NAME)
    procutil.become_subreaper()
    import distributed  # noqa: F401  (the whole point: children fork from a warm image)

    unix_comm.register()

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
