"""The runs of the server's workflows: each started workflow is one `daskstep run` subprocess in
its workspace, on the backend the server was started with, `max_runs` at a time, the rest
queued in start order.

A run is its own process group, and the kernel sends it SIGTERM when the server dies
(PR_SET_PDEATHSIG), so `daskstep run` tears its cluster down as on Ctrl-C. `stop` is the same
SIGTERM, then SIGKILL to the group after a grace period. On a restart, a run the store still
calls running is killed, group and all, and marked failed: nothing of it is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from daskstep.procutil import controller_alive, die_with_parent, kill_group
from daskstep.record import Workspace, read_status
from daskstep.serve.reana_logs import CONTROLLER_LOG
from daskstep.serve.store import Store, Workflow

STOP_GRACE = 8.0  # seconds between SIGTERM and SIGKILL on stop: within REANA's "gone in 10 s"


class Runs:
    """Starts, watches and stops the server's `daskstep run` processes."""

    def __init__(self, store: Store, backend: str, max_runs: int, secrets_of: object) -> None:
        self.store, self.backend, self.max_runs = store, backend, max_runs
        self.secrets_of = secrets_of  # user id -> the folder of that user's secrets
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: dict[str, float] = {}

    def recover(self) -> list[str]:
        """After a restart: the runs the last server left are killed and marked failed."""
        lost = []
        for workflow in self.store.with_status("running", "pending"):
            if workflow.pid and _alive(workflow.pid):  # its own group (start_new_session)
                kill_group(workflow.pid, signal.SIGKILL)
            self._kill_cluster(workflow)
            self.store.update(workflow.id, status="failed", finished=time.time(), pid=None)
            lost.append(workflow.full_name)
        return lost

    def queue(self, workflow: Workflow, parameters: dict[str, object]) -> None:
        self.store.update(workflow.id, status="queued", parameters=json.dumps(parameters))
        self.tick()

    def tick(self) -> None:
        """Reap what ended, escalate slow stops, start what the limit lets start."""
        for workflow_id, process in list(self.processes.items()):
            if process.poll() is not None:
                self._ended(workflow_id, process.returncode)
        for workflow_id, since in list(self.stopping.items()):
            process = self.processes.get(workflow_id)
            if process is None:
                self.stopping.pop(workflow_id)
            elif time.monotonic() - since > STOP_GRACE:
                kill_group(process.pid, signal.SIGKILL)
        free = self.max_runs - len(self.processes)
        for workflow in self.store.with_status("queued")[: max(free, 0)]:
            self._launch(workflow)

    def stop(self, workflow: Workflow) -> None:
        if workflow.status == "queued":
            self.store.update(workflow.id, status="stopped", finished=time.time())
            return
        process = self.processes.get(workflow.id)
        if process is not None:
            kill_group(process.pid, signal.SIGTERM)
            self.stopping.setdefault(workflow.id, time.monotonic())

    def close(self) -> None:
        """The server stops: every run stops with it, and is marked failed."""
        for workflow_id, process in self.processes.items():
            kill_group(process.pid, signal.SIGTERM)
            self.stopping[workflow_id] = time.monotonic()
        deadline = time.monotonic() + STOP_GRACE
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(process.pid, signal.SIGKILL)
                process.wait(5)
        for workflow_id in self.processes:
            self.store.update(workflow_id, status="failed", finished=time.time(), pid=None)
        self.processes.clear()

    def _launch(self, workflow: Workflow) -> None:
        parameters = json.loads(workflow.parameters or "{}")
        argv = [sys.executable, "-m", "daskstep", "run", "reana.yaml",
                "--workspace", str(workflow.workspace), "--backend", self.backend]  # fmt: skip
        for name, value in (parameters.get("input_parameters") or {}).items():
            argv += ["-p", f"{name}={value}"]
        secrets = self.secrets_of(workflow.user_id)  # type: ignore[operator]
        if secrets is not None:
            argv += ["--secrets", str(secrets)]
        state = workflow.workspace / ".daskstep"
        state.mkdir(exist_ok=True)
        parent = os.getpid()
        with open(state / CONTROLLER_LOG, "ab") as out:
            process = subprocess.Popen(
                argv, cwd=workflow.workspace, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM, expected_parent=parent),
            )  # fmt: skip
        self.processes[workflow.id] = process
        self.store.update(workflow.id, status="running", started=time.time(), pid=process.pid)

    def _ended(self, workflow_id: str, code: int) -> None:
        self.processes.pop(workflow_id)
        stopped = self.stopping.pop(workflow_id, None) is not None
        workflow = self.store.by_id(workflow_id)
        latest = Workspace(workflow.workspace).latest() if workflow else None
        doc = read_status(latest) if latest else {}
        status = "stopped" if stopped else "finished" if code == 0 else "failed"
        if doc.get("status") == "finished" and code == 0:
            status = "finished"
        self.store.update(
            workflow_id, status=status, finished=time.time(), pid=None,
            run=latest.number if latest else None,
        )  # fmt: skip

    def _kill_cluster(self, workflow: Workflow) -> None:
        """What a killed controller's run may have left: its cluster's processes."""
        latest = Workspace(workflow.workspace).latest()
        doc = read_status(latest) if latest else {}
        cluster = doc.get("cluster") or {}
        if controller_alive(doc.get("controller")):
            pid = int(str(doc["controller"]).rpartition(":")[2])
            if _alive(pid):
                kill_group(os.getpgid(pid), signal.SIGKILL)
        for pid in [cluster.get("launcher_pid"), *(cluster.get("worker_pids") or {}).values()]:
            if isinstance(pid, int) and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """A process of a run, not another that took a dead one's pid."""
    import psutil

    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "daskstep" in command or "distributed" in command
