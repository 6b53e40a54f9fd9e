"""A run's logs as REANA 0.95 returns them: `logs` is a JSON string with `workflow_logs`,
`job_logs` (one entry a step, keyed by a job id, with the step's lines of the job log) and
`service_logs` (the workflow's Dask cluster as one service, with the scheduler's and each
worker's log as an entry each), which `reana-client logs` prints under "Job logs" and
"Service logs".

The lines are the log store's (`.daskstep/runs/N/logs/`), as the program wrote them; a step's
lines are those between its `daskstep: step NAME (k/n) started` line and the next step's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from daskstep.record import STATE, RunFolder, Workspace, read_status

CONTROLLER_LOG = "serve-controller.log"  # what runs.py has `daskstep run` write to
MAX_BYTES = 4 << 20  # of each log sent back: the tail, as a REANA log page is bounded
STARTED = re.compile(r"^daskstep: step (?P<name>.+) \((?P<k>\d+)/(?P<n>\d+)\) started$")
JOB_STATUS = {"finished": "finished", "failed": "failed", "running": "running"}


def document(workspace: Path, workflow_id: str, backend: str, steps: list[str] | None) -> str:
    """The `logs` string of a workflow's latest run (empty parts before it began)."""
    run = Workspace(workspace).latest()
    doc: dict[str, Any] = {"workflow_logs": "", "job_logs": {}, "engine_specific": None,
                           "service_logs": {}}  # fmt: skip
    if run is None:
        return json.dumps(doc)
    status = read_status(run)
    doc["workflow_logs"] = _tail(workspace / STATE / CONTROLLER_LOG)  # daskstep run's own output
    step_lines = _split_steps(_tail(run.logs / "job.log"))
    for index, step in enumerate(status.get("steps") or []):
        name = str(step.get("name", f"step-{index + 1}"))
        if steps and name not in steps:
            continue
        job_id = f"{workflow_id}-{index + 1}"
        doc["job_logs"][job_id] = {
            "workflow_uuid": workflow_id,
            "job_name": name,
            "compute_backend": backend,
            "backend_job_id": job_id,
            "docker_img": step.get("environment") or "",
            "cmd": step.get("command") or "",
            "status": JOB_STATUS.get(str(step.get("status")), str(step.get("status"))),
            "logs": step_lines.get(name, ""),
            "started_at": step.get("started_at"),
            "finished_at": step.get("finished_at"),
        }
    doc["service_logs"] = service_logs(run, workflow_id)
    return json.dumps(doc)


def service_logs(run: RunFolder, workflow_id: str) -> dict[str, list[dict[str, str]]]:
    """The Dask cluster's logs, as REANA keys them: one service, the workflow's cluster, with an
    entry a process (the scheduler, then each worker)."""
    entries = []
    if scheduler := _tail(run.logs / "scheduler.log"):
        entries.append({"component": "scheduler", "content": scheduler})
    for path in sorted((run.logs / "workers").glob("*.log")):
        entries.append({"component": path.stem, "content": _tail(path)})
    return {f"reana-run-dask-{workflow_id}": entries} if entries else {}


def _split_steps(text: str) -> dict[str, str]:
    """Each step's lines, by the markers the run writes into the job log."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        marker = STARTED.match(line.rstrip("\n"))
        if marker:
            current = parts.setdefault(marker["name"], [])
        if current is not None:
            current.append(line)
    return {name: "".join(lines) for name, lines in parts.items()}


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - MAX_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
