"""The seams of a run, besides the cluster backend (backends/base.py): how a step's entrypoint
starts, and how logs are shipped. `Run` (run.py) is one loop over these parts; each backend
brings its own step launcher (a local process, a container, later a pod or a batch job), and
tests bring fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STEP_GRACE_SECONDS = 10.0  # between the entrypoint's TERM to the step's group and its KILL


@dataclass(frozen=True)
class StepSpec:
    """One step as a launcher needs it; the commands run in order under the entrypoint."""

    index: int
    name: str
    commands: tuple[str, ...]
    status_file: Path  # where the entrypoint writes its status (inside the workspace)
    scheduler: str | None = None
    image: str | None = None  # the step's `environment`, for launchers that run images
    wait_files: tuple[Path, ...] = ()  # credentials the sidecars keep valid
    environment: Mapping[str, str] = field(default_factory=dict)
    versions: str = "warn"  # the entrypoint's --versions: warn, fail or off
    compute_backend: str | None = None  # REANA's slurmcern / htcondorcern: a batch job
    batch_options: tuple[tuple[str, str], ...] = ()


class StepHandle(Protocol):
    def wait(self, timeout: float) -> int | None:
        """The step's exit code once it ended, else None after `timeout` seconds."""

    def signal(self, signum: int) -> None:
        """Deliver a signal to the step's entrypoint, which forwards it to the commands."""


def placement(handle: StepHandle) -> dict[str, Any]:
    """Where a step runs, when that is more than a process here (a batch job's id)."""
    return dict(getattr(handle, "placement", None) or {})


class StepLauncher(Protocol):
    def start(self, step: StepSpec) -> StepHandle: ...


class LogShipper(Protocol):
    def start(self, sources: list[str]) -> None:
        """Begin shipping `sources`, in the log sidecar's `--source` forms."""

    def stop(self) -> None:
        """Drain what is left, then stop; idempotent."""


class RunGuard(Protocol):
    def start(self) -> None:
        """From now on, a death of this process is recorded in the run's status."""

    def let_go(self) -> None:
        """The run recorded its own end."""


def termination_log(status_file: Path) -> Path:
    """Where the step's termination message (at most 1 KiB) goes, beside its status file."""
    return status_file.with_suffix(".message")


def entrypoint_options(step: StepSpec, status_file: str | Path | None = None) -> list[str]:
    """The entrypoint's options for `step`, the same whichever way the entrypoint is started;
    `status_file` is the path as the entrypoint sees it (inside a container, say)."""
    status = Path(status_file or step.status_file)
    argv = ["--status-file", str(status), "--termination-log", str(termination_log(status))]
    argv += ["--grace-period", f"{STEP_GRACE_SECONDS:g}", "--versions", step.versions]
    if step.scheduler:
        argv += ["--scheduler", step.scheduler]
    for path in step.wait_files:
        argv += ["--wait-file", str(path)]
    for command in step.commands:
        argv += ["--shell", command]
    return argv
