"""The run's `.daskstep/status.json`: rewritten atomically at each transition, so it tells the
truth during the run as well as after it."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from daskstep.record import controller_mark
from entrypoint.reporter import atomic_write, iso


class RunStatus:
    def __init__(self, path: Path, workflow: Any, backend: Any, number: int | None = None) -> None:
        self.path = path
        self.number = number  # the run's number in its workspace
        self.started = time.time()
        self.exit_code = 0
        self.state = "pending"
        self.message = ""
        dask = workflow.dask
        self.cluster: dict[str, Any] = {"backend": backend.name if backend else None}
        if dask is not None:
            self.cluster.update(
                workers_requested=dask.number_of_workers,
                single_worker_memory=dask.single_worker_memory,
                single_worker_threads=dask.single_worker_threads,
                image=dask.image,
                workers_ready=0,
            )
        self.steps: list[dict[str, Any]] = [
            {"name": s.name, "status": "pending", "exit_code": None} for s in workflow.steps
        ]
        self.credentials: dict[str, Any] = {}  # kind -> variable given, seconds to the first one
        self.events: list[dict[str, Any]] = []  # what happened to the cluster: OOM kills, ...
        self.engine: dict[str, Any] = {}  # a cwl or snakemake workflow's engine (engines/)
        self._writing = threading.Lock()  # events come from the backend's watcher threads
        self._step_clock: dict[int, float] = {}
        # absolute: `daskstep test` finds it from any folder
        self.workflow_path = str(Path(workflow.path).absolute())
        self.controller = controller_mark()  # host:pid: a reader can tell a dead run
        self.finished: float | None = None
        self.reason = ""

    def document(self) -> dict[str, Any]:
        end = self.finished or time.time()
        doc: dict[str, Any] = {
            "run": self.number,
            "status": self.state,
            "exit_code": self.exit_code if self.finished else None,
            "workflow": self.workflow_path,
            "started_at": iso(self.started),
            "finished_at": iso(self.finished) if self.finished else None,
            "duration_seconds": round(end - self.started, 3),
            "controller": self.controller,
            "cluster": self.cluster,
            "steps": self.steps,
        }
        if self.credentials:
            doc["credentials"] = self.credentials
        if self.events:
            doc["events"] = self.events
        if self.engine:
            doc["engine"] = self.engine
        if self.message:
            doc["message"] = self.message
        if self.reason:
            doc["reason"] = self.reason
        return doc

    def write(self) -> None:
        with self._writing:
            atomic_write(str(self.path), json.dumps(self.document(), indent=2) + "\n")

    def event(self, component: str, what: str, why: str) -> None:
        self.events.append({"time": iso(time.time()), "component": component, "what": what,
                            "why": why})  # fmt: skip
        self.write()

    def begin(self) -> None:
        self.state = "running"
        self.write()

    def credentials_ready(self, variables: dict[str, str], seconds: float) -> None:
        """Which credentials the workers get (the variable names only: paths are private)."""
        for kind, variable in variables.items():
            self.credentials[kind] = {"variable": variable, "ready_seconds": round(seconds, 3)}
        self.write()

    def cluster_started(self, handle: Any) -> None:
        self.cluster.update(scheduler=handle.scheduler_address, dashboard=handle.dashboard_url)
        self.write()

    def cluster_ready(self, workers: int, seconds: float) -> None:
        self.cluster.update(workers_ready=workers, start_seconds=round(seconds, 3))
        self.write()

    def cluster_stopped(self, seconds: float) -> None:
        self.cluster["stop_seconds"] = round(seconds, 3)

    def cluster_details(self, details: dict[str, Any]) -> None:
        """What the backend knows of its own (a run id, batch job ids, pids)."""
        self.cluster.update({k: v for k, v in details.items() if k not in self.cluster})
        self.cluster.update({k: v for k, v in details.items() if isinstance(v, dict)})

    def step_started(self, index: int) -> None:
        self.steps[index].update(status="running", started_at=iso(time.time()))
        self._step_clock[index] = time.monotonic()
        self.write()

    def step_placed(self, index: int, where: dict[str, Any]) -> None:
        self.steps[index].update(where)
        self.write()

    def step_finished(self, index: int, code: int, status_file: Path, cancelled: bool) -> None:
        entry = self.steps[index]
        entry.update(
            status="cancelled" if cancelled else "finished" if code == 0 else "failed",
            exit_code=code,
            finished_at=iso(time.time()),
            duration_seconds=round(time.monotonic() - self._step_clock[index], 3),
        )
        try:
            detail = json.loads(status_file.read_text())
            entry.update(reason=detail.get("reason"), peak_rss_bytes=detail.get("peak_rss_bytes"))
        except (OSError, ValueError):
            pass
        with contextlib.suppress(OSError):
            message = status_file.with_suffix(".message").read_text(errors="replace").strip()
            if message:
                entry["message"] = message
        if code != 0 and self.exit_code == 0:
            self.exit_code = code
            self.state = "failed"
            self.reason = self.reason or ("Cancelled" if cancelled else "StepFailed")
        self.write()

    def add_step(self, entry: dict[str, Any]) -> int:
        """A step found while the run goes on (a CWL tool, a Snakemake rule, as the engine
        starts it); its index in `steps`. Whether it fails the run is the engine's to say."""
        self.steps.append(dict(entry))
        self.write()
        return len(self.steps) - 1

    def update_step(self, index: int, entry: dict[str, Any]) -> None:
        self.steps[index].update(entry)
        self.write()

    def fail(self, message: str, code: int, reason: str | None = None) -> None:
        self.state, self.message = "failed", message
        self.exit_code = self.exit_code or code
        if reason and not self.reason:
            self.reason = reason  # e.g. SchedulerLost: what a platform can act on

    def cancel(self, signum: int) -> None:
        self.state = "cancelled"
        self.reason = "Cancelled"
        self.message = f"cancelled by {signal.Signals(signum).name}"
        self.exit_code = 128 + signum
        for entry in self.steps:
            if entry["status"] == "running":
                entry["status"] = "cancelled"

    def finish(self) -> None:
        self.finished = time.time()
        if self.state == "running":
            self.state = "finished"
        for entry in self.steps:
            if entry["status"] == "pending":
                entry["status"] = "skipped"
            elif entry["status"] == "running":  # its launcher failed: it never ended itself
                entry.update(status="failed", finished_at=iso(self.finished))
        self.write()
