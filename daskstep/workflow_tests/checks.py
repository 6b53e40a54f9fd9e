"""What each step of a workflow test checks, against the last run (`LastRun`).

A check passes by returning, fails by raising `Failed` with what was expected and what was
found, and skips its scenario by raising `Skipped` (a When step whose condition does not
hold, as REANA's StepSkipped). The meanings are REANA's; the messages say what to look at.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import TYPE_CHECKING

from daskstep.workflow_tests.last_run import OWN_LINE

if TYPE_CHECKING:
    from daskstep.workflow_tests.last_run import LastRun

SHOWN = 160  # characters of a log or a text shown in a message


class Failed(AssertionError):
    """The run is not as the step says."""


class Skipped(Exception):
    """The scenario's condition does not hold for this run."""


# REANA says "stopped" where daskstep says "cancelled"
SAME = {"stopped": "cancelled"}


def _same_status(expected: str, actual: str) -> bool:
    return SAME.get(expected, expected) == SAME.get(actual.lower(), actual.lower())


def _show(text: str, limit: int = SHOWN) -> str:
    """A text on one line, cut to `limit`: messages go on one line of the report."""
    flat = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    flat = flat.replace('"', '\\"')
    return f'"{flat[:limit]}…"' if len(flat) > limit else f'"{flat}"'


# -- the workflow's status ---------------------------------------------------------------------
def completes(run: LastRun) -> None:
    if run.state_name not in ("finished", "failed"):
        raise Skipped(f"the workflow has not completed: it is {run.describe()}")


def status_is(run: LastRun, status: str) -> None:
    if not _same_status(status, run.state_name):
        raise Skipped(f'the workflow is not "{status}": it is {run.describe()}')


def status_should_be(run: LastRun, status: str) -> None:
    if not _same_status(status, run.state_name):
        raise Failed(f'the workflow is not "{status}": it is {run.describe()}')


# -- the workspace -----------------------------------------------------------------------------
def included(run: LastRun, filename: str) -> None:
    if not run.path(filename).exists():
        raise Failed(f'the workspace does not contain "{filename}"')


def not_included(run: LastRun, filename: str) -> None:
    if run.path(filename).exists():
        raise Failed(f'the workspace contains "{filename}"')


def outputs_included(run: LastRun) -> None:
    missing = [name for name in run.outputs if not run.path(name).exists()]
    if missing:
        listed = ", ".join(f'"{name}"' for name in missing)
        raise Failed(f"the workspace does not contain the output{'s' * (len(missing) > 1)} "
                     f"{listed}")  # fmt: skip


def _file_bytes(run: LastRun, filename: str) -> bytes:
    path = run.path(filename)
    if path.is_dir():
        raise Skipped(f'"{filename}" is a folder; REANA skips this check for folders')
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Failed(f'the workspace does not contain "{filename}"') from None
    except OSError as e:
        raise Failed(f'cannot read "{filename}": {e.strerror}') from None


def file_contains(run: LastRun, filename: str, content: str) -> None:
    text = _file_bytes(run, filename).decode("utf-8", errors="replace")
    if content not in text:
        raise Failed(f'the file "{filename}" does not contain {_show(content)}')


def checksum(run: LastRun, algorithm: str, filename: str, checksum: str) -> None:
    data = _file_bytes(run, filename)
    if algorithm == "adler32":
        found, checksum = f"{zlib.adler32(data):x}", checksum.removeprefix("0x")
    else:
        found = hashlib.new(algorithm, data).hexdigest()
    if found != checksum:
        raise Failed(f'the {algorithm} checksum of "{filename}" is {found}, not {checksum}')


def _size_of(run: LastRun, filename: str) -> int:
    path = run.path(filename)
    if not path.is_file():
        raise Failed(f'the workspace has no file "{filename}"')
    return path.stat().st_size


def size_exactly(run: LastRun, filename: str, dim: int) -> None:
    if (size := _size_of(run, filename)) != dim:
        raise Failed(f'the size of "{filename}" is {size} bytes, not {dim}')


def size_between(run: LastRun, filename: str, dim1: int, dim2: int) -> None:
    low, high = sorted((dim1, dim2))
    if not low <= (size := _size_of(run, filename)) <= high:
        raise Failed(f'the size of "{filename}" is {size} bytes, not between {low} and {high}')


def size_more(run: LastRun, filename: str, dim: int) -> None:
    if (size := _size_of(run, filename)) <= dim:
        raise Failed(f'the size of "{filename}" is {size} bytes, not more than {dim}')


def size_less(run: LastRun, filename: str, dim: int) -> None:
    if (size := _size_of(run, filename)) >= dim:
        raise Failed(f'the size of "{filename}" is {size} bytes, not less than {dim}')


def workspace_at_most(run: LastRun, dim: int) -> None:
    if (size := run.workspace_bytes()) > dim:  # REANA's comparison: at most
        raise Failed(f"the workspace holds {size} bytes, more than {dim}")


def workspace_at_least(run: LastRun, dim: int) -> None:
    if (size := run.workspace_bytes()) < dim:
        raise Failed(f"the workspace holds {size} bytes, less than {dim}")


# -- the logs ----------------------------------------------------------------------------------
def logs_contain(run: LastRun, content: str) -> None:
    """REANA's "logs": the engine's and the jobs'."""
    if content not in run.engine_log() and content not in run.log("job"):
        raise Failed(f"the logs do not contain {_show(content)}")


def engine_logs_contain(run: LastRun, content: str) -> None:
    if content not in run.engine_log():
        raise Failed(f"the engine logs do not contain {_show(content)}")


def job_logs_contain(run: LastRun, content: str) -> None:
    if content not in run.log("job"):
        raise Failed(f"the job logs do not contain {_show(content)}")


def step_logs(run: LastRun, step_name: str, content: str) -> None:
    text = run.step_log(step_name)
    if text is None:
        raise Failed(f'the run has no step "{step_name}"; its steps: {run.step_names()}')
    if content not in text:
        lines = [ln for ln in text.strip().splitlines() if not ln.startswith(OWN_LINE)]
        seen = f"; its last line: {_show(lines[-1], 100)}" if lines else "; it wrote nothing"
        raise Failed(f'the job logs of step "{step_name}" do not contain {_show(content)}{seen}')


def scheduler_logs_contain(run: LastRun, content: str) -> None:
    if content not in run.log("scheduler"):
        raise Failed(f"the scheduler logs do not contain {_show(content)}")


def worker_logs_contain(run: LastRun, content: str) -> None:
    logs = run.worker_logs()
    if not any(content in text for text in logs.values()):
        which = ", ".join(sorted(logs)) or "no worker logs"
        raise Failed(f"no worker log contains {_show(content)} ({which})")


def cluster_workers(run: LastRun, workers: int) -> None:
    ready = run.cluster.get("workers_ready")
    if ready != workers:
        found = "no cluster" if ready is None else f"{ready} worker{'s' * (ready != 1)} ready"
        raise Failed(f"the cluster had {found}, not {workers}")


# -- durations ---------------------------------------------------------------------------------
def _less_than(what: str, seconds: object, limit: float, unit: float) -> None:
    if not isinstance(seconds, int | float):
        raise Failed(f"{what} has no duration: it has not ended")
    if seconds >= limit * unit:
        took = f"{seconds / 60:.2f} minutes" if unit == 60 else f"{seconds:.1f} seconds"
        raise Failed(f"{what} took {took}, not less than {limit:g} "
                     f"{'minutes' if unit == 60 else 'seconds'}")  # fmt: skip


def run_duration(run: LastRun, limit: float, unit: float) -> None:
    seconds = run.status.get("duration_seconds") if run.status.get("finished_at") else None
    _less_than("the workflow", seconds, limit, unit)


def step_duration(run: LastRun, step_name: str, limit: float, unit: float) -> None:
    step = run.step(step_name)
    if step is None:
        raise Failed(f'the run has no step "{step_name}"; its steps: {run.step_names()}')
    _less_than(f'the step "{step_name}"', step.get("duration_seconds"), limit, unit)
