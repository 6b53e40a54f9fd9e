"""The step vocabulary of workflow tests: REANA's (reana-commons' gherkin_parser, which
`reana-client test` runs), then daskstep's own.

Each phrase is written as REANA writes it, in the `parse` library's form that REANA matches
with: `{name}` takes any text, lazily; a step must match whole; case does not matter. A doc
string is appended to the step's text in double quotes, as REANA does, so `should contain`
followed by a `\"\"\"` block is the same step as `should contain "..."`. The first phrase that
matches wins, as in REANA. So REANA's published feature files run unchanged.

Arguments are checked when the feature file is read (a status that does not exist, a size
without a unit REANA knows, an unknown checksum): a mistake in a feature file is exit 2 before
any scenario runs, not a failure found later.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daskstep.workflow_tests import checks

GIVEN, WHEN, THEN, ANY = "Context", "Action", "Outcome", "Unknown"  # the pickles' step types
CONDITION = (GIVEN, WHEN)  # REANA's are When steps; Given reads as well for a precondition
OUTCOME = (THEN,)
KEYWORD = {GIVEN: "Given", WHEN: "When", THEN: "Then"}

# REANA's workflow statuses, and daskstep's name for REANA's "stopped"
STATUSES = ("created", "queued", "pending", "running", "finished", "failed", "stopped",
            "cancelled", "deleted")  # fmt: skip
# REANA's size units: IEC multiples of 1024
SIZE_UNITS = {"": 1, "bytes": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
              "TiB": 1024**4, "PiB": 1024**5}  # fmt: skip
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
TIME_UNITS = {"minutes": 60.0, "minute": 60.0, "seconds": 1.0, "second": 1.0}
CHECKSUMS = ("sha256", "sha512", "md5", "adler32")  # REANA's


class UnknownStep(ValueError):
    """No phrase matches: the message names the closest one."""


class BadArgument(ValueError):
    """A phrase matches but one of its values cannot be meant (a status, a size)."""


def _unquote(text: str) -> str:
    return text.strip().strip('"')


def _status(text: str) -> str:
    status = _unquote(text).lower()
    if status not in STATUSES:
        raise BadArgument(
            f"{_unquote(text)!r} is not a workflow status; use one of {', '.join(STATUSES)}"
        )
    return status


def _size(text: str) -> int:
    found = SIZE.fullmatch(_unquote(text))
    if not found or found[2] not in SIZE_UNITS:
        raise BadArgument(
            f"{_unquote(text)!r} is not a size; write bytes, or a number with one of "
            "B, KiB, MiB, GiB, TiB, PiB (e.g. 150KiB)"
        )
    return int(float(found[1]) * SIZE_UNITS[found[2]])


def _path(text: str) -> str:
    path = _unquote(text).lstrip("/").removeprefix("./")
    if not path or ".." in path.split("/"):
        raise BadArgument(f"{_unquote(text)!r} is not a path inside the workspace; write e.g. "
                          '"results/plot.png"')  # fmt: skip
    return path


def _algorithm(text: str) -> str:
    name = _unquote(text).lower()
    if name not in CHECKSUMS:
        raise BadArgument(f"{_unquote(text)!r} is not a checksum REANA knows; use one of "
                          f"{', '.join(CHECKSUMS)}")  # fmt: skip
    return name


def _number(text: str) -> float:
    try:
        value = float(_unquote(text))
    except ValueError:
        raise BadArgument(f"{_unquote(text)!r} is not a number; write e.g. 4") from None
    if not value > 0 or value == float("inf"):
        raise BadArgument(f"{_unquote(text)!r} is not a positive number; write e.g. 4")
    return value


def _seconds_per(text: str) -> float:
    unit = _unquote(text).lower()
    if unit not in TIME_UNITS:
        raise BadArgument(f"{_unquote(text)!r} is not a unit of time; write minutes or seconds")
    return TIME_UNITS[unit]


def _workers(text: str) -> int:
    value = _unquote(text)
    if not value.isdigit():
        raise BadArgument(f"{value!r} is not a number of workers; write e.g. 2")
    return int(value)


# How each named value of a phrase is read; the rest stay text, as REANA gives them.
READERS: dict[str, Callable[[str], Any]] = {
    "status": _status,
    "dim": _size,
    "dim1": _size,
    "dim2": _size,
    "filename": _path,
    "algorithm": _algorithm,
    "checksum": lambda text: _unquote(text).lower(),
    "step_name": _unquote,
    "limit": _number,
    "unit": _seconds_per,
    "workers": _workers,
}


@dataclass(frozen=True)
class Phrase:
    """One step of the vocabulary: its wording, the keywords it goes with, its check."""

    wording: str
    kinds: tuple[str, ...]
    check: Callable[..., None]
    regex: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.wording)
        pattern = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
        )
        object.__setattr__(self, "regex", re.compile(pattern, re.IGNORECASE | re.DOTALL))


@dataclass(frozen=True)
class BoundStep:
    """A feature file's step with its phrase and its values, ready to check a run."""

    phrase: Phrase
    values: dict[str, Any]

    def check(self, run: Any) -> None:
        self.phrase.check(run, **self.values)


def _p(wording: str, check: Callable[..., None], kinds: tuple[str, ...] = OUTCOME) -> Phrase:
    return Phrase(wording, kinds, check)


REANA: tuple[Phrase, ...] = (  # in the order reana-commons defines them
    _p("the workflow execution completes", checks.completes, CONDITION),
    _p("the workflow is {status}", checks.status_is, CONDITION),
    _p("the workflow status is {status}", checks.status_is, CONDITION),
    _p("the workflow should be {status}", checks.status_should_be),
    _p("the workflow status should be {status}", checks.status_should_be),
    _p("the outputs should be included in the workspace", checks.outputs_included),
    _p("all the outputs should be included in the workspace", checks.outputs_included),
    _p('the workspace should include "{filename}"', checks.included),
    _p('the workspace should contain "{filename}"', checks.included),
    _p("{filename} should be in the workspace", checks.included),
    _p("the workspace should not include {filename}", checks.not_included),
    _p("the workspace should not contain {filename}", checks.not_included),
    _p("{filename} should not be in the workspace", checks.not_included),
    _p('the logs should contain "{content}"', checks.logs_contain),
    _p('the engine logs should contain "{content}"', checks.engine_logs_contain),
    _p('the job logs should contain "{content}"', checks.job_logs_contain),
    _p('the job logs for the step {step_name} should contain "{content}"', checks.step_logs),
    _p('the job logs for the {step_name} step should contain "{content}"', checks.step_logs),
    _p('the file {filename} should include "{content}"', checks.file_contains),
    _p('the file {filename} should contain "{content}"', checks.file_contains),
    _p("the {algorithm} checksum of the file {filename} should be {checksum}", checks.checksum),
    _p("the workflow run duration should be less than {limit} {unit}", checks.run_duration),
    _p(
        "the duration of the step {step_name} should be less than {limit} {unit}",
        checks.step_duration,
    ),
    _p("the size of the file {filename} should be exactly {dim}", checks.size_exactly),
    _p("the size of the file {filename} should be between {dim1} and {dim2}", checks.size_between),
    _p("the workspace size should be less than {dim}", checks.workspace_at_most),
    _p("the workspace size should be more than {dim}", checks.workspace_at_least),
)
DASKSTEP: tuple[Phrase, ...] = (  # words REANA's users reach for, and the cluster's own logs
    _p("the workflow completes", checks.completes, CONDITION),
    _p("the workspace should include {filename}", checks.included),
    _p("the workspace should contain {filename}", checks.included),
    _p("the duration of the workflow should be less than {limit} {unit}", checks.run_duration),
    _p("the size of the file {filename} should be more than {dim}", checks.size_more),
    _p("the size of the file {filename} should be less than {dim}", checks.size_less),
    _p('the scheduler logs should contain "{content}"', checks.scheduler_logs_contain),
    _p('the worker logs should contain "{content}"', checks.worker_logs_contain),
    _p("the cluster should have {workers} workers", checks.cluster_workers),
    _p("the cluster should have {workers} worker", checks.cluster_workers),
)
VOCABULARY = REANA + DASKSTEP


def listing() -> list[str]:
    """The vocabulary as `daskstep test --steps` prints it."""
    return [
        f"{KEYWORD[p.kinds[-1]]} {p.wording}" + ("" if p in REANA else "  (daskstep)")
        for p in VOCABULARY
    ]


def _values(phrase: Phrase, found: re.Match[str]) -> dict[str, Any]:
    values = {}
    for name, text in found.groupdict().items():
        reader = READERS.get(name)
        values[name] = reader(text) if reader else text
    return values


def find(kind: str, text: str) -> BoundStep:
    """The phrase `text` says, for a step of `kind` (Given/When/Then; `*` takes any)."""
    for phrase in VOCABULARY:
        if (kind == ANY or kind in phrase.kinds) and (found := phrase.regex.fullmatch(text)):
            return BoundStep(phrase, _values(phrase, found))
    other = next((p for p in VOCABULARY if p.regex.fullmatch(text)), None)
    if other is not None:
        keyword = KEYWORD[other.kinds[-1]]
        raise UnknownStep(f"it is a {keyword} step; write it after {keyword}")
    wordings = [p.wording for p in VOCABULARY if kind == ANY or kind in p.kinds]
    close = difflib.get_close_matches(text.split(' "', 1)[0], wordings, n=1, cutoff=0.6)
    if close:
        raise UnknownStep(f'did you mean "{close[0]}"?')
    raise UnknownStep("write one of the steps daskstep test --steps lists")
