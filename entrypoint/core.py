"""The step loop: wait, run, report. Parts are injected, as in Tekton's entrypointer, so the loop
is tested with fakes and the real parts are tested with real processes."""

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol


class EntrypointError(Exception):
    """A wrapper failure with a stable exit code and a status reason (see DESIGN.md)."""

    exit_code = 70
    reason = "Error"


class UsageError(EntrypointError):
    exit_code = 64


class SchedulerUnavailable(EntrypointError):
    exit_code = 69
    reason = "SchedulerUnavailable"


class TooFewWorkers(EntrypointError):
    exit_code = 75
    reason = "TooFewWorkers"


class VersionMismatch(EntrypointError):
    exit_code = 78
    reason = "VersionMismatch"


@dataclass
class Readiness:
    scheduler: Optional[str] = None
    workers: Optional[int] = None


@dataclass
class RunResult:
    exit_code: int
    reason: str  # Completed, Error, Signaled or TimeoutExceeded
    peak_rss_bytes: Optional[int] = None
    started: Optional[float] = None  # wall-clock time the command started


@dataclass
class Status:
    reason: str
    exit_code: int
    started_at: float
    finished_at: float
    scheduler: Optional[str] = None
    workers: Optional[int] = None
    peak_rss_bytes: Optional[int] = None
    message: str = ""
    extra: Dict[str, object] = field(default_factory=dict)


class Waiter(Protocol):
    def wait(self) -> Readiness: ...


class Runner(Protocol):
    def run(self, commands: List[List[str]], env: Dict[str, str]) -> RunResult: ...


class Reporter(Protocol):
    def write(self, status: Status) -> None: ...


class Entrypointer:
    def __init__(self, waiter: Waiter, runner: Runner, reporter: Reporter) -> None:
        self.waiter = waiter
        self.runner = runner
        self.reporter = reporter

    def go(self, commands: List[List[str]], env: Dict[str, str]) -> int:
        """Run the step and return the exit code; the status is written whatever happens."""
        started = time.time()
        status = Status(reason="Error", exit_code=70, started_at=started, finished_at=started)
        try:
            ready = self.waiter.wait()
            status.scheduler, status.workers = ready.scheduler, ready.workers
            if ready.scheduler:
                env = dict(env, DASK_SCHEDULER_URI=ready.scheduler)
                env["DASK_SCHEDULER_ADDRESS"] = ready.scheduler
            result = self.runner.run(commands, env)
            status.reason, status.exit_code = result.reason, result.exit_code
            status.peak_rss_bytes = result.peak_rss_bytes
        except EntrypointError as e:
            status.reason, status.exit_code, status.message = e.reason, e.exit_code, str(e)
            print(f"daskstep-entrypoint: {e}", file=sys.stderr, flush=True)
        except BaseException as e:
            status.reason, status.exit_code = "Error", 70
            status.message = f"internal error: {type(e).__name__}: {e}"
            raise
        finally:
            status.finished_at = time.time()
            self.reporter.write(status)
        return status.exit_code
