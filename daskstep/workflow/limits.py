"""Platform limits on Dask clusters, and the YAML and memory-size helpers the spec reader shares.

The defaults are REANA's, packaged as ``limits.yaml``; an operator narrows or widens them with
``--limits FILE``, which only needs to name the keys it changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from daskstep.errors import InputError, Problem
from daskstep.words import plural

MEMORY_PATTERN = re.compile(r"^[1-9][0-9]*(Ei|Pi|Ti|Gi|Mi|Ki|E|P|T|G|M|K)\Z")
MEMORY_HINT = "use a whole number with a unit such as 512Mi or 2Gi"

_UNITS = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
}
# Largest first, binary before decimal, so format_memory picks the shortest exact spelling.
_FORMAT_ORDER = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki", "E", "P", "T", "G", "M", "K")

INT_FIELDS = (
    "default_number_of_workers",
    "max_number_of_workers",
    "default_single_worker_threads",
    "max_single_worker_threads",
)
MEMORY_FIELDS = ("default_single_worker_memory", "max_single_worker_memory", "max_memory_limit")
SWITCH_FIELDS = ("autoscaler",)  # true, false, or unset (~): the backend's default
KNOWN_FIELDS = INT_FIELDS + MEMORY_FIELDS + SWITCH_FIELDS
_DEFAULT_AND_MAX = (
    ("default_number_of_workers", "max_number_of_workers"),
    ("default_single_worker_memory", "max_single_worker_memory"),
    ("default_single_worker_threads", "max_single_worker_threads"),
)


def parse_memory(text: str) -> int:
    """Bytes of a Kubernetes-style size; binary suffixes are powers of 1024, decimal of 1000."""
    if not isinstance(text, str) or not MEMORY_PATTERN.match(text):
        raise ValueError(f"{show(text)} is not a memory size; {MEMORY_HINT}")
    unit = text[-2:] if text[-1] == "i" else text[-1]
    return int(text[: -len(unit)]) * _UNITS[unit]


def format_memory(n_bytes: int) -> str:
    """Shortest exact spelling ("16Gi"), so messages echo the units users write."""
    for unit in _FORMAT_ORDER:
        if n_bytes > 0 and n_bytes % _UNITS[unit] == 0:
            return f"{n_bytes // _UNITS[unit]}{unit}"
    return str(n_bytes)


def show(value: Any) -> str:
    """A short, one-line rendering of a user's value; never a repr of a big object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def key_name(key: Any) -> str:
    """A user's mapping key as a field name that stays on one line."""
    name = str(key)
    return name if name and name.isprintable() and name.strip() == name else show(name)


def kind(value: Any) -> str:
    """The YAML word for a value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    for typ, word in (
        (bool, "a boolean"),
        (int, "a whole number"),
        (float, "a decimal number"),
        (str, "a string"),
        (dict, "a mapping"),
        (list, "a list"),
    ):
        if isinstance(value, typ):
            return word
    return f"a {type(value).__name__}"


MAX_DEPTH = 100  # far beyond any reana.yaml; PyYAML's composer recurses once per level


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML (and so REANA) silently drops, and
    nesting deeper than MAX_DEPTH, which would end in a RecursionError."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def read_yaml(path: str | Path) -> tuple[Any, list[Problem]]:
    """Parse a YAML file; problems instead of exceptions so the CLI prints one line each."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem("", "file not found; check the path")]
    except IsADirectoryError:
        return None, [Problem("", "is a directory, not a file; give the path of the YAML file")]
    except UnicodeDecodeError:
        return None, [Problem("", "is not UTF-8 text; save it as UTF-8 YAML")]
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, [Problem("", f"cannot be read ({reason}); check the path and permissions")]
    try:
        return yaml.load(text, Loader=_StrictLoader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = _one_line(exc.problem or exc.context or "syntax error")
        return None, [Problem("", f"is not valid YAML{where}: {what}; fix the YAML syntax there")]
    except yaml.YAMLError as exc:
        message = _one_line(str(exc))
        return None, [Problem("", f"is not valid YAML: {message}; fix the YAML syntax")]
    except (ValueError, OverflowError) as exc:  # a scalar that PyYAML matched but cannot build
        message = _one_line(str(exc)).split(";")[0][:200]
        return None, [Problem("", f"has a value YAML cannot read: {message}; quote or fix it")]


@dataclass(frozen=True)
class Limits:
    """What the platform allows a workflow's Dask cluster to ask for."""

    default_number_of_workers: int
    max_number_of_workers: int
    default_single_worker_memory: str
    max_single_worker_memory: str
    max_memory_limit: str
    default_single_worker_threads: int
    max_single_worker_threads: int
    autoscaler: bool | None = None  # REANA's DASK_AUTOSCALER_ENABLED; None: the backend's

    @property
    def default_single_worker_memory_bytes(self) -> int:
        return parse_memory(self.default_single_worker_memory)

    @property
    def max_single_worker_memory_bytes(self) -> int:
        return parse_memory(self.max_single_worker_memory)

    @property
    def max_memory_limit_bytes(self) -> int:
        return parse_memory(self.max_memory_limit)


def _check_values(values: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key in INT_FIELDS:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(
                Problem(key, f"expected a whole number, got {show(value)}; write e.g. {key}: 4")
            )
        elif value < 1:
            problems.append(
                Problem(key, f"{value} is not allowed; use a whole number of at least 1")
            )
    for key in MEMORY_FIELDS:
        value = values[key]
        if not isinstance(value, str) or not MEMORY_PATTERN.match(value):
            problems.append(Problem(key, f"{show(value)} is not a memory size; {MEMORY_HINT}"))
    for key in SWITCH_FIELDS:
        if values[key] is not None and not isinstance(values[key], bool):
            problems.append(switch_problem(key, values[key]))
    if problems:
        return problems  # the comparisons below need well-typed values
    for default_key, max_key in _DEFAULT_AND_MAX:
        default, maximum = values[default_key], values[max_key]
        if _as_number(default) > _as_number(maximum):
            problems.append(
                Problem(
                    default_key,
                    f"{default} is above {max_key} ({maximum}); "
                    f"lower {default_key} or raise {max_key}",
                )
            )
    total = values["default_number_of_workers"] * parse_memory(
        values["default_single_worker_memory"]
    )
    if total > parse_memory(values["max_memory_limit"]):
        problems.append(
            Problem(
                "max_memory_limit",
                f"{values['max_memory_limit']} is below the default cluster's memory "
                f"({plural(values['default_number_of_workers'], 'worker')} x "
                f"{values['default_single_worker_memory']} = {format_memory(total)}); "
                "raise max_memory_limit or lower the defaults",
            )
        )
    return problems


def switch_problem(key: str, value: Any) -> Problem:
    return Problem(key, f"expected true or false, got {show(value)}; write e.g. {key}: true")


def _as_number(value: int | str) -> int:
    """Compare counts as they are and memory sizes in bytes."""
    return parse_memory(value) if isinstance(value, str) else value


def _packaged_defaults() -> dict[str, Any]:
    text = resources.files("daskstep.workflow").joinpath("limits.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text))


def load_limits(path: str | Path | None = None) -> Limits:
    """REANA's defaults, overridden key by key from ``path``; a comment-only file overrides none."""
    values = _packaged_defaults()
    source = "daskstep/workflow/limits.yaml (packaged)"
    problems: list[Problem] = []
    if path is not None:
        source = str(path)
        document, problems = read_yaml(path)
        if problems:
            raise InputError(problems, source=source)
        if document is None:
            document = {}
        if not isinstance(document, dict):
            message = (
                f"the top level is {kind(document)}, not a mapping; "
                "write one key per line, e.g. max_number_of_workers: 10"
            )
            raise InputError([Problem("", message)], source=source)
        for key, value in document.items():
            if key in values:
                values[key] = value
            else:
                message = f"unknown limit; use one of {', '.join(KNOWN_FIELDS)}"
                problems.append(Problem(key_name(key), message))
    problems += _check_values(values)
    if problems:
        raise InputError(problems, source=source)
    return Limits(**{key: values[key] for key in KNOWN_FIELDS})
