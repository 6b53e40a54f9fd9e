"""A workspace's runs, as REANA numbers a workflow's runs: each `daskstep run` gets the next
number and a folder of its own, `.daskstep/runs/N/`, with its status, logs, step files, report
and test results, so a second run in the same workspace never mixes with the first.

The latest run's files are also where users and tools found them before runs were numbered:
`.daskstep/status.json`, `logs`, `report.html`, `report.png` and `tests.xml` are symbolic links
into the latest run's folder, moved when a run begins. Readers (`daskstep logs`, `test`,
`status`) take the highest-numbered run that has a status file, unless told `--run N`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem

STATE = ".daskstep"
RUNS = "runs"
REPORT_HTML, REPORT_PNG = "report.html", "report.png"  # the report's own folder may be any
LATEST = ("status.json", "logs", REPORT_HTML, REPORT_PNG, "tests.xml")


def new_run_id() -> str:
    """A run's name in the engine's or the cluster's objects: `ds-` and ten hex digits, a DNS
    label however it is extended."""
    return f"ds-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class RunFolder:
    """Where one run keeps what it writes. `number` is None for a folder outside the numbered
    layout (a backend or a sidecar used on its own: `WORKSPACE/.daskstep`)."""

    workspace: Path
    folder: Path
    number: int | None = None

    @classmethod
    def plain(cls, workspace: Path | str) -> RunFolder:
        return cls(Path(workspace), Path(workspace) / STATE)

    @classmethod
    def of(cls, where: RunFolder | Path | str) -> RunFolder:
        """A backend's `start` takes a run's folder, or a bare workspace (benches, tests)."""
        return where if isinstance(where, RunFolder) else cls.plain(where)

    @property
    def name(self) -> str:
        return f"run {self.number}" if self.number is not None else str(self.folder)

    @property
    def status_file(self) -> Path:
        return self.folder / "status.json"

    @property
    def logs(self) -> Path:
        """The log store: only the log sidecar writes it."""
        return self.folder / "logs"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "log-checkpoints.json"

    @property
    def raw(self) -> Path:
        """What the processes write; the log sidecar copies it into the store."""
        return self.folder / "raw"

    @property
    def worker_logs(self) -> Path:
        """Where each worker process writes its own log (raw, one file per worker)."""
        return self.raw / "workers"

    @property
    def steps(self) -> Path:
        """The entrypoint's status file of each step."""
        return self.folder / "steps"

    @property
    def engine(self) -> Path:
        """A cwl or snakemake engine's own files."""
        return self.folder / "engine"

    @property
    def sidecars(self) -> Path:
        """The credential sidecars' messages."""
        return self.folder / "sidecars"

    @property
    def report_html(self) -> Path:
        return self.folder / REPORT_HTML

    @property
    def tests_xml(self) -> Path:
        return self.folder / "tests.xml"

    def step_status(self, index: int, name: str) -> Path:
        return self.steps / f"{index + 1:02d}-{name}.json"


class Workspace:
    """The runs of one workspace."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.state = self.root / STATE
        self.runs = self.state / RUNS

    def run_folder(self, number: int) -> RunFolder:
        return RunFolder(self.root, self.runs / str(number), number)

    def numbers(self) -> list[int]:
        """Every run's number, oldest first, begun or not."""
        try:
            names = os.listdir(self.runs)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit() and not n.startswith("0"))

    def recorded(self) -> list[RunFolder]:
        """The runs that began (they have a status file), oldest first."""
        folders = [self.run_folder(n) for n in self.numbers()]
        return [f for f in folders if f.status_file.exists()]

    def latest(self) -> RunFolder | None:
        found = self.recorded()
        return found[-1] if found else None

    def find(self, number: int | None = None) -> RunFolder:
        """Run `number`, or the latest; bad input (one line, exit 2) when there is none."""
        self.adopt_unnumbered()
        if number is None:
            latest = self.latest()
            if latest is None:
                raise InputError(
                    [
                        Problem(
                            "--workspace",
                            f"no run in {self.root}; run daskstep run first, or give the "
                            "run's --workspace",
                        )
                    ]
                )
            return latest
        folder = self.run_folder(number)
        if not folder.status_file.exists():
            known = ", ".join(str(f.number) for f in self.recorded()) or "none"
            raise InputError(
                [Problem("--run", f"{self.root} has no run {number}; its runs: {known}")]
            )
        return folder

    def new_run(self) -> RunFolder:
        """The next number, taken with mkdir so that two runs started at once differ."""
        self.adopt_unnumbered()
        self.runs.mkdir(parents=True, exist_ok=True)
        number = (self.numbers() or [0])[-1] + 1
        while True:
            folder = self.run_folder(number)
            try:
                folder.folder.mkdir()
                return folder
            except FileExistsError:
                number += 1

    def point_latest(self, run: RunFolder) -> None:
        """`.daskstep/status.json`, `logs`, ... name this run's from now on. Each link is
        replaced in one rename, so a reader sees the old run's file or the new one's."""
        for name in LATEST:
            link = self.state / name
            temporary = self.state / f".{name}.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            os.symlink(Path(RUNS) / str(run.number) / name, temporary)
            os.replace(temporary, link)

    def adopt_unnumbered(self) -> None:
        """A workspace an older daskstep ran in has its one run's files right in `.daskstep/`:
        they become run 1, so the first numbered run is 2 and nothing is lost."""
        status = self.state / "status.json"
        if not status.is_file() or status.is_symlink() or self.numbers():
            return
        first = self.run_folder(1).folder
        first.mkdir(parents=True)
        for entry in list(self.state.iterdir()):
            if entry.name != RUNS and entry.name not in ("entrypoint.pyz",):
                shutil.move(str(entry), first / entry.name)
        self.point_latest(self.run_folder(1))

    def remove(self, run: RunFolder) -> None:
        shutil.rmtree(run.folder, ignore_errors=True)


def read_status(run: RunFolder) -> dict[str, Any]:
    """The run's status.json as its readers should see it: a run still `running` whose
    controller is gone from this host (and whose logs are drained) is shown failed, with
    `ControllerLost`, even before its reaper wrote so (or if the reaper died too)."""
    try:
        doc = json.loads(run.status_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    if doc.get("status") in ("pending", "running") and controller_gone(doc.get("controller")):
        from sidecar.logs import store_in_use

        if not store_in_use(run.logs):
            doc = {**doc, "status": "failed", "reason": "ControllerLost",
                   "message": f"the controller ({doc.get('controller')}) died before the run "
                   "ended"}  # fmt: skip
    return doc


def run_ended(run: RunFolder) -> bool:
    return read_status(run).get("status") not in (None, "pending", "running")


def controller_mark() -> str:
    """host:pid of this `daskstep run`, put in its status.json and on what a run leaves outside
    its process tree (containers, batch jobs), so that readers, the reaper and `daskstep gc`
    can tell whether the run lives."""
    return f"{os.uname().nodename}:{os.getpid()}"


def _here(mark: object) -> int | None:
    """The pid a mark names, when it is a process of this host."""
    if not isinstance(mark, str):
        return None
    host, _, pid = mark.rpartition(":")
    return int(pid) if host == os.uname().nodename and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def controller_alive(mark: object) -> bool:
    """Whether the controller a mark names runs (another host's: not known to, so no)."""
    pid = _here(mark)
    return pid is not None and _pid_alive(pid)


def controller_gone(mark: object) -> bool:
    """Only a controller of this host can be known dead; another host's may live."""
    pid = _here(mark)
    return pid is not None and not _pid_alive(pid)
