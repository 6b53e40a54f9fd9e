"""`daskstep list`, `daskstep status` and `daskstep prune`: a workspace's numbered runs, as
REANA's `reana-client list` and `status` show a workflow's runs.

They read what the runs left (daskstep/record.py) and start nothing, so they answer at once,
while a run goes on as well as after it.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from daskstep.errors import InputError, Problem
from daskstep.record import RunFolder, Workspace, read_status


def summary(run: RunFolder, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run's line of `list`, as data (from `doc`, its status, when the caller has it)."""
    doc = read_status(run) if doc is None else doc
    cluster = doc.get("cluster") if isinstance(doc.get("cluster"), dict) else {}
    return {
        "run": run.number,
        "status": doc.get("status"),
        "reason": doc.get("reason"),
        "started_at": doc.get("started_at"),
        "duration_seconds": doc.get("duration_seconds"),
        "exit_code": doc.get("exit_code"),
        "backend": cluster.get("backend") or "none",
        "workflow": doc.get("workflow"),
    }


def _when(iso: object) -> str:
    """status.json's UTC time as local time, to the second."""
    if not isinstance(iso, str):
        return "-"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _code(value: object) -> str:
    return "-" if value is None else str(value)


def show_list(workspace: Workspace, as_json: bool, out: TextIO = sys.stdout) -> int:
    runs = [summary(run) for run in reversed(workspace.recorded())]  # newest first, as REANA
    if as_json:
        out.write(json.dumps(runs, indent=2) + "\n")
        return 0
    if not runs:
        out.write(f"no runs in {workspace.root}\n")
        return 0
    header = ("RUN", "STATUS", "STARTED", "DURATION", "EXIT", "BACKEND")
    rows = [header] + [
        (
            str(r["run"]),
            _status_words(r),
            _when(r["started_at"]),
            _seconds(r["duration_seconds"]),
            _code(r["exit_code"]),
            str(r["backend"]),
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    return 0


def _status_words(run: dict[str, Any]) -> str:
    """`failed (ControllerLost)`: the reason is what tells one failure from another."""
    if run["status"] == "failed" and run["reason"]:
        return f"failed ({run['reason']})"
    return str(run["status"])


def show_status(run: RunFolder, as_json: bool, out: TextIO = sys.stdout) -> int:
    doc = read_status(run)
    if as_json:
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0
    status = str(doc.get("status"))
    if doc.get("reason") and status != "finished":
        status += f" ({doc['reason']})"
    lines = [f"run {run.number}: {status}, exit code {_code(doc.get('exit_code'))}"]
    lines.append(f"  workflow  {doc.get('workflow') or '-'}")
    if doc.get("finished_at"):
        took = f"took {_seconds(doc.get('duration_seconds'))}"
    else:  # status.json's duration is as old as its last write
        started = _moment(doc.get("started_at"))
        running = (datetime.now(timezone.utc) - started).total_seconds() if started else None
        took = f"running for {_seconds(running)}"
    lines.append(f"  started   {_when(doc.get('started_at'))}, {took}")
    if doc.get("message"):
        lines.append(f"  message   {doc['message']}")
    lines.append(f"  cluster   {_cluster(doc.get('cluster'))}")
    steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
    if steps:
        lines.append("  steps")
        width = max(len(str(s.get("name"))) for s in steps)
        for step in steps:
            words = str(step.get("status"))
            if step.get("exit_code") is not None:
                words += f", exit code {step['exit_code']}"
            if step.get("duration_seconds") is not None:
                words += f", {_seconds(step['duration_seconds'])}"
            lines.append(f"    {str(step.get('name')).ljust(width)}  {words}")
    events = [e for e in doc.get("events") or [] if isinstance(e, dict)]
    if events:
        lines.append("  events")
        for e in events:
            lines.append(f"    {_when(e.get('time'))}  {e.get('component')}: {e.get('what')}: "
                         f"{e.get('why')}")  # fmt: skip
    if run.report_html.exists():
        lines.append(f"  report    {run.report_html}")
    out.write("\n".join(lines) + "\n")
    return 0


def _cluster(cluster: object) -> str:
    if not isinstance(cluster, dict) or not cluster.get("backend"):
        return "none"
    words = [str(cluster["backend"])]
    if cluster.get("workers_requested") is not None:
        ready, wanted = cluster.get("workers_ready", 0), cluster["workers_requested"]
        words.append(f"{ready}/{wanted} workers × {cluster.get('single_worker_memory')}, "
                     f"{cluster.get('single_worker_threads')} threads each")  # fmt: skip
    if cluster.get("scheduler"):
        words.append(f"scheduler {cluster['scheduler']}")
    return ", ".join(words)


def parse_date(text: str) -> datetime:
    """`--before 2026-12-01` (local midnight) or `2026-12-01T12:00`; ValueError says the form."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date; write e.g. 2026-12-01 or 2026-12-01T12:00"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def prune(
    workspace: Workspace,
    keep: int | None,
    before: datetime | None,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Remove old runs' folders: those past the newest `keep`, or begun before `before`.
    Never the latest run, nor one still running."""
    if keep is None and before is None:
        raise InputError([Problem("prune", "say which runs go: --keep K, or --before DATE")])
    runs = workspace.recorded()
    latest = runs[-1] if runs else None
    chosen = []
    for index, run in enumerate(runs):
        doc = read_status(run)
        old = keep is not None and index < len(runs) - keep
        if before is not None:
            started = _moment(doc.get("started_at"))
            old = old or (started is not None and started < before)
        if not old or run == latest:
            continue
        if doc.get("status") in ("pending", "running"):
            out.write(f"run {run.number} is still running; kept\n")
            continue
        chosen.append(run)
    for run in chosen:
        if not dry_run:
            workspace.remove(run)
        out.write(f"{'would remove' if dry_run else 'removed'} run {run.number}\n")
    if not chosen:
        out.write("nothing to remove\n")
    return 0


def _moment(iso: object) -> datetime | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None
