"""The local backend: a real scheduler and workers as processes on this machine, on 127.0.0.1.

The processes come from `daskstep.backends.launcher`, in a session of its own (forked from this
process, or executed: warm_launch.py). The controller talks to it over a pipe; if the controller
dies, the pipe closes and the launcher tears the cluster down, and the kernel kills whatever the
launcher leaves (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from daskstep import procutil
from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec, nanny_environment
from daskstep.backends.registry import Kind
from daskstep.backends.warm_launch import ForkedLauncher, start_launcher
from daskstep.errors import ClusterError, SchedulerLost
from daskstep.record import RunFolder
from daskstep.scaling import SchedulerPool

SCHEDULER_START_TIMEOUT = 60.0


def exit_words(code: int) -> str:
    """A process's end in words: `exited with code 3`, `was killed by SIGKILL`."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class LocalBackend(ClusterBackend, SchedulerPool):
    name = "local"
    shares_step_environment = True
    own_scheduler = True  # the launcher's (cluster_side.py)

    def __init__(
        self,
        death_timeout: float = 30.0,
        host: str = "127.0.0.1",
        scheduler_file: Path | None = None,
        tls: Any = None,
    ) -> None:
        super().__init__(tls)
        self.death_timeout = death_timeout
        self.host = host  # where the scheduler listens
        self.scheduler_file = scheduler_file  # written once it listens (batch workers wait)
        self._eof = threading.Event()  # the launcher's stdout closed: it has exited
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | ForkedLauncher | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._seen: list[dict[str, Any]] = []
        self._reported = 0  # how many of _seen were looked at for news
        self._memory_kills: dict[str, dict[str, Any]] = {}
        self._log_dir: Path | None = None
        self._launcher_log: Path | None = None
        self.pool: set[str] = set()

    def _start(self, spec: ClusterSpec, run: RunFolder) -> ClusterHandle:
        self.launch(spec, run)
        return self.await_scheduler()

    def launch(self, spec: ClusterSpec, run: RunFolder) -> None:
        """Start the launcher without waiting for it: a batch backend submits its worker jobs
        meanwhile (they wait for the scheduler file)."""
        self._log_dir = run.raw  # where the processes write; the log sidecar reads it
        run.worker_logs.mkdir(parents=True, exist_ok=True)
        self._launcher_log = run.folder / "launcher.log"
        self.pool = {f"worker-{i}" for i in range(spec.workers)}
        self.next_worker = spec.workers
        # The workers fork from the launcher: what must be there before a worker starts is
        # in the launcher's environment from its start on, the rest is set in each worker.
        before, after = nanny_environment(spec.environment)
        config = {
            "workers": spec.workers,
            "threads": spec.threads,
            "memory_limit": spec.memory_bytes,
            "log_dir": str(self._log_dir.resolve()),
            "death_timeout": self.death_timeout,
            "environment": after,
            "host": self.host,
            "scheduler_file": str(self.scheduler_file) if self.scheduler_file else None,
            "tls": str(self.tls.folder) if self.tls is not None else None,
        }
        self._proc, forked = start_launcher(config, before, run.workspace, self._launcher_log)
        if not forked:
            _import_distributed_meanwhile()
        self._reader = threading.Thread(
            target=self._read_events, daemon=True, name="launcher-events"
        )
        self._reader.start()

    def await_scheduler(self) -> ClusterHandle:
        scheduler = self._next_event("scheduler", SCHEDULER_START_TIMEOUT)
        port = scheduler.get("http_port")
        dashboard = f"http://{self.host}:{port}/status" if port else None
        # set here too: a batch backend's scheduler is up from now on, so its death is a loss
        self.handle = ClusterHandle(scheduler_address=scheduler["address"], dashboard_url=dashboard)
        return self.handle

    def _read_events(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                self._events.put(json.loads(line))
        self._events.put({"event": "eof"})
        self._eof.set()

    def _next_event(self, wanted: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.check_cancel()
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                raise ClusterError(
                    f"the local scheduler did not start within {timeout:g} s"
                ) from None
            self._seen.append(event)
            if event["event"] == wanted:
                return event
            if event["event"] in ("error", "eof"):
                raise ClusterError(f"the local cluster failed to start: {self._failure()}")

    def _drain(self) -> None:
        while True:
            try:
                self._seen.append(self._events.get_nowait())
            except queue.Empty:
                return

    def _failure(self) -> str:
        self._drain()
        for event in self._seen:
            if event["event"] == "scheduler-exited":
                return (
                    f"the scheduler {exit_words(event['code'])}; see {self._log_dir}/scheduler.log"
                )
            if event["event"] in ("error", "worker-given-up"):
                return event.get("message") or json.dumps(event)
        tail = ""
        if self._launcher_log and self._launcher_log.exists():
            lines = self._launcher_log.read_text(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        return tail or f"the launcher exited; see {self._launcher_log}"

    def check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            lost = SchedulerLost if self.handle is not None else ClusterError
            raise lost(f"the local cluster stopped: {self._failure()}")
        self._drain()
        self._report_new()
        for event in self._seen:
            if event["event"] == "worker-given-up":
                raise ClusterError(
                    f"worker {event['name']} keeps crashing; see "
                    f"{self._log_dir}/workers/{event['name']}.log"
                )

    def _report_new(self) -> None:
        """What happened to the workers since the last look: a worker lost (and restarted), or
        killed for memory. A worker the scheduler closed (exit 0, `Client.restart()`) is not
        news. Once the scheduler is gone, the rest is teardown."""
        for event in self._seen[self._reported :]:
            self._reported += 1
            kind, name = event["event"], event.get("name", "")
            if kind in ("scheduler-exited", "stopped"):
                self._reported = len(self._seen)
                return
            if kind == "worker-memory-exceeded":
                self._memory_kills[name] = event
            elif kind == "worker-exited" and name in self._memory_kills:
                seen = self._memory_kills.pop(name)
                self.report(
                    f"worker {name}",
                    "killed for memory (OOM)",
                    f"it used {format_bytes(seen['rss'])}, past {seen['fraction']:.0%} of its "
                    f"{format_bytes(seen['limit'])} limit; restarting it",
                )
            elif kind == "worker-exited" and event["code"] != 0:
                self.report(
                    f"worker {name}", "lost", f"it {exit_words(event['code'])}; restarting it"
                )

    def add_worker(self, name: str) -> None:
        self._tell(f"add {name}")

    def let_go(self, name: str, retiring: bool) -> None:
        self._tell(f"{'retire' if retiring else 'keep'} {name}")

    def _tell(self, line: str) -> None:
        """A command line to the launcher (launcher.py's protocol)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):  # gone: check_alive says so
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.write(b"stop\n")
                    proc.stdin.close()
            # Its stdout closes as it exits: waking on that beats wait()'s 50 ms polling.
            if self._reader is not None:
                self._eof.wait(15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        finally:
            # The launcher leads its own process group: whatever it could not stop dies here.
            procutil.kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def log_sources(self, run: RunFolder) -> list[str]:
        raw = run.raw
        return [f"scheduler={raw / 'scheduler.log*'}", f"worker={raw / 'workers' / '*.log*'}"]

    def status(self) -> dict[str, Any]:
        self._drain()
        workers = {e["name"]: e["pid"] for e in self._seen if e["event"] == "worker"}
        return {
            **super().status(),
            "launcher_pid": self._proc.pid if self._proc else None,
            "worker_pids": workers,
            "restarts": sum(1 for e in self._seen if e["event"] == "worker-exited"),
        }


class LocalKind(Kind):
    """The embedded default: the cluster and the steps as processes here, in our Python."""

    name = "local"
    runs_engines = True

    def cluster(self, run_id: str, tls: Any, systems: dict[str, Any]) -> ClusterBackend:
        return LocalBackend(tls=tls)

    @classmethod
    def bare_cluster(cls) -> ClusterBackend:
        return LocalBackend()


def _import_distributed_meanwhile() -> None:
    """Called once an executed launcher is importing its own distributed (0.3 s, on one core): the
    controller's import, on the other core, where it came after the scheduler was up (to see
    the workers register) and a ready cluster waited 0.1-0.15 s for it. In the main thread: a
    thread importing beside it could show it a half-made module."""
    import distributed.core
    import distributed.security  # noqa: F401
