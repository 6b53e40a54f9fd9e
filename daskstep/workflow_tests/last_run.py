"""One run of a workspace (the latest, or `--run N`), as its workflow tests see it: its
status.json, its log store (through `daskstep logs`' View) and the workspace's files.

REANA's tests ask its server for a workflow's status, logs and files; here the same questions
go to what `daskstep run` left behind, read through the log store's own reader, so a test sees
exactly what `daskstep logs` shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.logview import View
from daskstep.record import STATE, RunFolder, read_status

# The lines `daskstep run` writes into the job log around each step: what tells one step's
# lines from the next one's, since all steps write into the same job log.
STEP_STARTED = re.compile(r"daskstep: step (?P<name>.+?)(?: \(\d+/\d+\))? started")
STEP_ENDED = re.compile(
    r"daskstep: step (?P<name>.+?) (?:finished|failed with exit code -?\d+"
    r"|cancelled \(exit code -?\d+\)|stopped \(exit code -?\d+\): .*)"
)
OWN_LINE = "daskstep: "  # the controller's own lines in the job log: the serial engine's log


def _one_text(lines: list[str]) -> str:
    return "".join(lines)


class LastRun:
    """What one run left in its workspace; logs are read once, when a test first asks."""

    def __init__(self, run: RunFolder, outputs: tuple[str, ...] = ()) -> None:
        self.run = run
        self.workspace = run.workspace
        self.state = run.folder
        self.outputs = outputs
        path = run.status_file
        try:
            status = read_status(run) or json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(
                [
                    Problem(
                        "--workspace",
                        f"no run in {self.workspace}: {path} is missing; run daskstep run "
                        "first, or give the run's --workspace",
                    )
                ]
            ) from None
        except (OSError, ValueError) as e:
            raise InputError(
                [Problem("--workspace", f"cannot read {path}: {e}; give the run's --workspace")]
            ) from None
        if not isinstance(status, dict):
            raise InputError([Problem("--workspace", f"{path} is not a run's status")])
        self.status: dict[str, Any] = status
        self._logs: dict[str, list[tuple[int, str]]] = {}
        self._steps: dict[str, str] | None = None

    # -- status.json ---------------------------------------------------------------------------
    @property
    def state_name(self) -> str:
        return str(self.status.get("status") or "unknown")

    def describe(self) -> str:
        """The status with what explains it: the exit code and the message, when there is one."""
        text = f'"{self.state_name}"'
        if self.status.get("exit_code") not in (None, 0):
            text += f" (exit code {self.status['exit_code']}"
            text += f": {self.status['message']})" if self.status.get("message") else ")"
        return text

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps = self.status.get("steps")
        return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []

    def step(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.steps if s.get("name") == name), None)

    def step_names(self) -> str:
        return ", ".join(str(s.get("name")) for s in self.steps) or "none"

    @property
    def cluster(self) -> dict[str, Any]:
        cluster = self.status.get("cluster")
        return cluster if isinstance(cluster, dict) else {}

    # -- the log store -------------------------------------------------------------------------
    def _read(self, component: str) -> list[tuple[int, str]]:
        """(timestamp in ns, text) of each line of a component; several workers' merged by
        time. A run that ended before its logs started has none."""
        if component not in self._logs:
            view = View(self.run, component)
            lines = [(ln.timestamp_ns, ln.text()) for _, ln in view.new_lines()]
            self._logs[component] = lines
        return self._logs[component]

    def log(self, component: str) -> str:
        return _one_text([text for _, text in self._read(component)])

    def worker_logs(self) -> dict[str, str]:
        """Each worker's log, by the worker's name."""
        found: dict[str, list[str]] = {}
        for label, line in View(self.run, "worker").new_lines():
            found.setdefault(label, []).append(line.text())
        return {name: _one_text(lines) for name, lines in found.items()}

    def engine_log(self) -> str:
        """The engine's own log: a CWL or Snakemake engine's stream, and daskstep's own lines
        in the job log (the serial engine is daskstep itself)."""
        own = [text for _, text in self._read("job") if text.startswith(OWN_LINE)]
        return self.log("engine") + _one_text(own)

    def step_log(self, name: str) -> str | None:
        """The job log's lines of one step, or None when the run has no such step."""
        if self.step(name) is None:
            return None
        if self._steps is None:
            self._steps = self._split_job_log()
        if name in self._steps:
            return self._steps[name]
        return self._by_time(name)

    def _split_job_log(self) -> dict[str, str]:
        """Between `daskstep: step NAME (i/n) started` and its `finished` or `failed` line."""
        steps: dict[str, list[str]] = {}
        current: str | None = None
        for _, text in self._read("job"):
            bare = text.rstrip("\r\n")
            if started := STEP_STARTED.fullmatch(bare):
                current = started["name"]
                steps.setdefault(current, [])
            elif (ended := STEP_ENDED.fullmatch(bare)) and ended["name"] == current:
                current = None
            elif current is not None:
                steps[current].append(text)
        return {name: _one_text(lines) for name, lines in steps.items()}

    def _by_time(self, name: str) -> str:
        """A step without marks in the job log (a run of an older daskstep, or an engine's
        tool): its lines by the times status.json gives it, as near as the store's stamps are."""
        step = self.step(name) or {}
        start, end = _ns(step.get("started_at")), _ns(step.get("finished_at"))
        if start is None:
            return ""
        end = end if end is not None else 2**63
        return _one_text([t for ts, t in self._read("job") if start <= ts <= end + 10**9])

    # -- the workspace -------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A path the feature names, relative to the workspace (REANA's leading / allowed)."""
        return self.workspace / name.lstrip("/").removeprefix("./")

    def workspace_bytes(self) -> int:
        """The size of the workflow's files; daskstep's own `.daskstep` folder is not part of
        the workspace REANA would measure."""
        total = 0
        for folder, dirs, files in os.walk(self.workspace):
            if Path(folder) == self.workspace and STATE in dirs:
                dirs.remove(STATE)
            for name in files:
                with contextlib.suppress(OSError):  # gone meanwhile
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total


def _ns(iso: object) -> int | None:
    """status.json's times (`2026-11-28T15:54:02.819Z`) in ns since the epoch."""
    from datetime import datetime

    if not isinstance(iso, str):
        return None
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None
