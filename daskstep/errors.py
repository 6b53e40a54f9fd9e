"""Typed errors of the controller; the CLI maps them to exit codes in one place."""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One finding about a user's input: where it is, and what to do about it."""

    path: str  # dotted field path, e.g. "workflow.resources.dask.number_of_workers"
    message: str  # says what is wrong and how to fix it, in one line
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DaskstepError(Exception):
    """Base of the errors the CLI turns into one line and an exit code; `reason` is the word
    status.json records for a run that ended so."""

    exit_code = 1
    reason = "Error"


class InputError(DaskstepError):
    """Bad input from the user: one line per problem, exit 2, no traceback."""

    exit_code = 2
    reason = "BadInput"

    def __init__(
        self, problems: list[Problem], source: str = "", warnings: list[Problem] | None = None
    ) -> None:
        self.problems = problems
        self.source = source
        self.warnings = warnings or []  # shown too: "did you mean ...?" explains many errors
        super().__init__("; ".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [f"warning: {prefix}{p}" for p in self.warnings] + [
            f"error: {prefix}{p}" for p in self.problems
        ]


class ClusterError(DaskstepError):
    """The cluster could not be started or did not become usable."""

    exit_code = 69
    reason = "ClusterFailed"


class TooFewWorkers(ClusterError):
    exit_code = 75
    reason = "TooFewWorkers"


class SchedulerLost(ClusterError):
    """The scheduler was up and then died (its process, container or pod is gone): every
    task and result of the run went with it, so the run fails at once with a code of its own."""

    exit_code = 71
    reason = "SchedulerLost"


class InternalError(DaskstepError):
    """Something daskstep did not expect (a bug, a library's own error): still a run that
    failed, recorded as one."""

    exit_code = 70
    reason = "InternalError"


class Cancelled(DaskstepError):
    """A cancel (SIGINT, SIGTERM) seen by a wait. Never raised from a signal handler: the
    handler only sets the cancel event, and the waits that observe it raise this."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"cancelled by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def described(e: BaseException) -> str:
    """An error that is not daskstep's own, in one line: the Docker engine's own words (an
    APIError's `explanation`) when it gives them, else the error's type and message."""
    explanation = getattr(e, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    if explanation:
        return " ".join(str(explanation).split())
    return " ".join(f"{type(e).__name__}: {e}".split())
