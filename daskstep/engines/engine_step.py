"""The engine step of a cwl or snakemake workflow, as `daskstep run` checks, starts and follows
it.

The engine (cwltool, snakemake) runs as one step, under the entrypoint like a serial step, so
it waits for the cluster, gets DASK_SCHEDULER_URI and the run's TLS, and stops with the run; its
output is the engine log. The steps of status.json are the tools it runs, not known before: each
tool's entrypoint writes its status file into `.daskstep/steps/` (engines/tool.py), and while
the engine runs those files are folded into status.json. The run's exit code is the first
failing tool's, as for serial steps; the engine's own code only when no tool failed (a workflow
file the engine refuses, say). A tool that failed while the engine succeeded (CWL's
successCodes) does not fail the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daskstep.engines.output import ToolOutput
from daskstep.engines.tool import JOB_LOG_ENV, STEPS_ENV
from daskstep.errors import Problem
from daskstep.record import RunFolder
from daskstep.seams import StepHandle
from daskstep.status import RunStatus
from daskstep.workflow.spec import Workflow
from entrypoint.reporter import iso

if TYPE_CHECKING:
    from daskstep.backends.registry import Kind

# type -> (the engine's name, its Python package, the driver module)
ENGINES = {
    "cwl": ("cwltool", "cwltool", "daskstep.engines.cwl"),
    "snakemake": ("snakemake", "snakemake", "daskstep.engines.snakemake"),
}
FOLD_SECONDS = 0.5  # how often status.json learns of the engine's steps
STATUS_FILE = re.compile(r"^(?P<n>\d+)-(?P<name>.+)\.json$")


def is_engine(workflow: Workflow) -> bool:
    return workflow.type in ENGINES


def input_file(workflow: Workflow) -> str | None:
    """REANA's `inputs.parameters.input`: the CWL job order, or the Snakemake config file."""
    value = dict(workflow.parameters).get("input")
    return value if isinstance(value, str) else None


def engine_problems(workflow: Workflow, backend: Kind) -> list[Problem]:
    """What `run` needs besides the files: a backend that runs the engine (its registry
    `Kind`), and the engine."""
    name, package, _ = ENGINES[workflow.type]
    problems = []
    if not backend.runs_engines:
        problems.append(
            Problem(
                "--backend",
                f"{backend.name} cannot run {workflow.type} workflows yet; use --backend local",
            )
        )
    if importlib.util.find_spec(package) is None:
        problems.append(
            Problem(
                "workflow.type",
                f"{workflow.type} needs {name}, which is not installed; "
                "pip install 'daskstep[engines]'",
            )
        )
    return problems


def stage_engine_files(workflow: Workflow, workspace: Path) -> None:
    """The workflow file and its input file go into the workspace too, as REANA uploads them;
    what they refer to (tools, scripts, data) must be among the inputs."""
    source = workflow.path.parent.resolve()
    if workspace.resolve() == source:
        return
    for name in (workflow.file, input_file(workflow)):
        if name:
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, workspace / name)


class ToolSteps:
    """The tools' status files, folded into status.json's steps as they appear and end."""

    def __init__(self, folder: Path, status: RunStatus) -> None:
        self.folder = folder
        self.status = status
        self.index: dict[str, int] = {}  # status file name -> its entry in status.steps
        self.settled: set[str] = set()  # the files whose tool has ended

    def clear(self) -> None:
        """A workspace run before: its tools are not this run's."""
        for path in self.folder.glob("*"):
            if path.suffix in (".json", ".message") and path.name[:1].isdigit():
                path.unlink(missing_ok=True)

    def poll(self) -> None:
        files = [(m, p) for p in self.folder.glob("*.json") if (m := STATUS_FILE.match(p.name))]
        for match, path in sorted(files, key=lambda f: (int(f[0]["n"]), f[1].name)):
            if path.name in self.settled:
                continue
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):  # being written: the next poll reads it
                continue
            entry = step_entry(match["name"], doc)
            if path.name in self.index:
                if not doc.get("name"):  # the name read first stays (the file's is mangled)
                    del entry["name"]
                self.status.update_step(self.index[path.name], entry)
            else:  # its `started` and `ended` lines come from the tool itself, in order
                self.index[path.name] = self.status.add_step(entry)
            if entry["status"] != "running":
                self.settled.add(path.name)

    def finish(self, cancelled: bool) -> None:
        """The engine has ended: a tool still running had its entrypoint killed."""
        self.poll()
        for name, index in self.index.items():
            if cancelled and self.status.steps[index].get("reason") == "Signaled":
                self.status.update_step(index, {"status": "cancelled"})  # the run's signal
            elif name not in self.settled:
                entry = {"status": "cancelled" if cancelled else "failed"}
                entry["finished_at"] = iso(time.time())
                self.status.update_step(index, entry)

    def first_failure(self) -> tuple[str, int] | None:
        for index in sorted(self.index.values()):
            entry = self.status.steps[index]
            if entry.get("status") == "failed" and entry.get("exit_code"):
                return entry["name"], entry["exit_code"]
        return None


def step_entry(file_name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A status.json step from an entrypoint's status file (or the tool wrapper's first one)."""
    code = doc.get("exit_code")
    running = doc.get("reason") == "Running"
    entry: dict[str, Any] = {
        "name": doc.get("name") or file_name,
        "status": "running" if running else "finished" if code == 0 else "failed",
        "exit_code": code,
        "started_at": doc.get("started_at"),
    }
    if not running:
        for key in ("finished_at", "duration_seconds", "reason", "peak_rss_bytes", "message"):
            if doc.get(key) is not None:
                entry[key] = doc[key]
    return entry


class _Folding:
    """The engine's handle for the run loop: each wait also folds the tools' status files."""

    def __init__(self, handle: StepHandle, tools: ToolSteps) -> None:
        self.handle = handle
        self.tools = tools
        self.next_fold = 0.0

    def wait(self, timeout: float) -> int | None:
        code = self.handle.wait(timeout)
        if code is None and time.monotonic() >= self.next_fold:
            self.next_fold = time.monotonic() + FOLD_SECONDS
            self.tools.poll()
        return code

    def signal(self, signum: int) -> None:
        self.handle.signal(signum)


class EngineStep:
    """What `daskstep run` needs of a cwl or snakemake workflow (run.py's `_run_engine`)."""

    def __init__(
        self,
        workflow: Workflow,
        record: RunFolder,
        status: RunStatus,
        say: Callable[[str], None],
    ) -> None:
        self.workflow = workflow
        self.workspace = record.workspace
        self.status = status
        self.say = say
        self.name, _, self.module = ENGINES[workflow.type]
        self.folder = record.engine  # the driver's own files
        self.status_file = self.folder / "engine.json"
        self.job_log = record.raw / "job.log"
        self.tool_pipe = record.raw / "job.pipe"  # the tools' output, on its way to the job log
        self.tools = ToolSteps(record.steps, status)
        self.started = 0.0

    def commands(self) -> tuple[str, ...]:
        """The driver, as the entrypoint's one shell command."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tools.folder.mkdir(parents=True, exist_ok=True)
        self.tools.clear()
        parameters = self.folder / "parameters.json"
        parameters.write_text(json.dumps(dict(self.workflow.parameters), default=str) + "\n")
        argv = [sys.executable, "-m", self.module, "--workspace", str(self.workspace)]
        argv += ["--file", str(self.workspace / (self.workflow.file or ""))]
        argv += ["--parameters", str(parameters), "--folder", str(self.folder)]
        return ("exec " + shlex.join(argv),)

    def tool_output(self) -> ToolOutput:
        """While the engine runs: its tools' output into the job log and onto the terminal."""
        return ToolOutput(self.tool_pipe, self.job_log)

    def environment(self, versions: str) -> dict[str, str]:
        """What the tools' entrypoints read (they inherit it through the engine)."""
        return {
            STEPS_ENV: str(self.tools.folder),
            JOB_LOG_ENV: str(self.tool_pipe),
            "DASKSTEP_VERSIONS": versions,
        }

    def follow(self, handle: StepHandle) -> StepHandle:
        self.started = time.time()
        self.status.engine.update(
            type=self.workflow.type,
            name=self.name,
            file=self.workflow.file,
            status="running",
            started_at=iso(self.started),
        )
        self.status.write()
        return _Folding(handle, self.tools)

    def finished(self, code: int, cancelled: bool) -> None:
        """The tools' last statuses, the engine's own, and the run's exit code."""
        self.tools.finish(cancelled)
        status = "cancelled" if cancelled else "finished" if code == 0 else "failed"
        self.status.engine.update(status=status, exit_code=code, finished_at=iso(time.time()))
        with contextlib.suppress(OSError, ValueError):
            detail = json.loads(self.status_file.read_text())
            self.status.engine.update(
                reason=detail.get("reason"), peak_rss_bytes=detail.get("peak_rss_bytes")
            )
        if code != 0 and not cancelled:
            failed = self.tools.first_failure()
            if failed is not None:
                name, tool_code = failed
                message = f"step {name} failed with exit code {tool_code}"
                self.status.fail(message, tool_code, "StepFailed")
            else:
                message = (
                    f"the {self.name} engine failed with exit code {code}; "
                    "see `daskstep logs --component engine`"
                )
                self.status.fail(message, code, "EngineFailed")
                self.say(f"error: {message}")
        self.status.write()
