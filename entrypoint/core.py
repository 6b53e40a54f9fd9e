"""The step loop: wait, run, report. Parts are injected, as in Tekton's entrypointer, so the loop
is tested with fakes and the real parts are tested with real processes.

No `typing` or `dataclasses` at run time: the wrapper starts before every step, and those two
imports alone would cost more than the rest of it.
"""

from __future__ import annotations

import signal
import sys
import time

TYPE_CHECKING = False  # not `typing`: importing it costs more than this module

if TYPE_CHECKING:
    from typing import Protocol

    class Waiter(Protocol):
        def wait(self) -> Readiness: ...

    class Runner(Protocol):
        def run(self, commands: list[list[str]], env: dict[str, str]) -> RunResult: ...

    class Reporter(Protocol):
        def write(self, status: Status) -> None: ...


class EntrypointError(Exception):
    """A wrapper failure with a stable exit code and a status reason (docs/architecture.md)."""

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


class StoppedWhileWaiting(EntrypointError):
    """A signal (Ctrl-C, a SIGTERM, the parent's death) before the step started."""

    reason = "Signaled"

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum} while waiting; the step did not start")
        self.exit_code = 128 + signum


class _SignalsEndTheWait:
    """While waiting there is no child to forward a signal to: the wait itself ends, and the
    status still says so (the default action would have left none)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __enter__(self) -> _SignalsEndTheWait:
        self.previous = {}
        try:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._stop)
        except ValueError:  # not the main thread (unit tests): nothing to install
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @staticmethod
    def _stop(signum: int, frame: object) -> None:
        raise StoppedWhileWaiting(signum)


class Readiness:
    def __init__(self, scheduler: str | None = None, workers: int | None = None) -> None:
        self.scheduler = scheduler
        self.workers = workers


class RunResult:
    def __init__(
        self,
        exit_code: int,
        reason: str,  # Completed, Error, Signaled or TimeoutExceeded
        peak_rss_bytes: int | None = None,
        started: float | None = None,  # wall-clock time the command started
    ) -> None:
        self.exit_code = exit_code
        self.reason = reason
        self.peak_rss_bytes = peak_rss_bytes
        self.started = started


class Status:
    def __init__(
        self,
        reason: str,
        exit_code: int,
        started_at: float,
        finished_at: float,
        scheduler: str | None = None,
        workers: int | None = None,
        peak_rss_bytes: int | None = None,
        message: str = "",
    ) -> None:
        self.reason = reason
        self.exit_code = exit_code
        self.started_at = started_at
        self.finished_at = finished_at
        self.scheduler = scheduler
        self.workers = workers
        self.peak_rss_bytes = peak_rss_bytes
        self.message = message
        self.command_started_at: float | None = None


class Entrypointer:
    def __init__(self, waiter: Waiter, runner: Runner, reporter: Reporter) -> None:
        self.waiter = waiter
        self.runner = runner
        self.reporter = reporter

    def go(self, commands: list[list[str]], env: dict[str, str]) -> int:
        """Run the step and return the exit code; the status is written whatever happens."""
        started = time.time()
        status = Status(reason="Error", exit_code=70, started_at=started, finished_at=started)
        try:
            with _SignalsEndTheWait():
                ready = self.waiter.wait()
            status.scheduler, status.workers = ready.scheduler, ready.workers
            if ready.scheduler:
                env = dict(env, DASK_SCHEDULER_URI=ready.scheduler)
                env["DASK_SCHEDULER_ADDRESS"] = ready.scheduler
            result = self.runner.run(commands, env)
            status.reason, status.exit_code = result.reason, result.exit_code
            status.peak_rss_bytes = result.peak_rss_bytes
            status.command_started_at = result.started
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
