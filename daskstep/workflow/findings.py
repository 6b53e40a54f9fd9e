"""Collecting the problems of a user's document, so that one run reports all of them at once,
each naming its field and the fix, on one line."""

from __future__ import annotations

import difflib
import posixpath
from pathlib import PurePosixPath
from typing import Any

from daskstep.errors import Problem
from daskstep.workflow.limits import kind, show
from daskstep.workflow.reana import IMAGE_HINT, IMAGE_PATTERN


def got(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return kind(value)
    return f"{show(value)} ({kind(value)})"


def _leaves_workspace(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or posixpath.normpath(name).split("/")[0] == ".."


def _join(path: str, key: Any) -> str:
    """A field path for messages; a key that is not plain printable text is shown quoted, so
    a control character cannot break the one line a problem gets."""
    text = str(key)
    if not (text and text.isprintable() and text == text.strip()):
        text = show(text) if isinstance(key, str) else repr(key)
    return f"{path}.{text}" if path else text


class Report:
    """Collects problems so that one run reports all of them, not just the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    def unknown_keys(
        self, mapping: dict, known: tuple[str, ...], path: str, listed: str = ""
    ) -> None:
        listed = listed or ", ".join(known)
        for key in mapping:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            self.warn(
                _join(path, key),
                f"unknown field, ignored; {hint}known fields here: {listed}",
            )

    def mapping(
        self, parent: dict, key: str, path: str, example: str, required: bool = False
    ) -> dict | None:
        if key not in parent:
            if required:
                self.error(path, f"missing; add {example}")
            return None
        value = parent[key]
        if isinstance(value, dict):
            return value
        self.error(path, f"expected a mapping, got {got(value)}; write {example}")
        return None

    def boolean(self, parent: dict, key: str, path: str) -> bool:
        value = parent.get(key, False)
        if isinstance(value, bool):
            return value
        self.error(path, f"expected true or false, got {got(value)}; write {key}: true")
        return False

    def strings(
        self, parent: dict | None, key: str, path: str, in_workspace: bool = False
    ) -> tuple[str, ...]:
        """A list of strings; with `in_workspace`, paths that must stay inside the workspace."""
        if parent is None or key not in parent:
            return ()
        value = parent[key]
        if not isinstance(value, list):
            self.error(path, f"expected a list of strings, got {got(value)}; write {key}: [a, b]")
            return ()
        items = []
        for i, item in enumerate(value):
            if not (isinstance(item, str) and item.strip()):
                self.error(
                    f"{path}[{i}]", f"expected a non-empty string, got {got(item)}; quote it"
                )
            elif in_workspace and _leaves_workspace(item):
                self.error(
                    f"{path}[{i}]",
                    f"{show(item)} is outside the workspace; give a path relative to the "
                    "workflow's folder, without a leading / or ..",
                )
            else:
                items.append(item)
        return tuple(items)

    def image(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected an image reference, got {got(value)}; {IMAGE_HINT}")
        elif not IMAGE_PATTERN.match(value):
            self.error(path, f"{show(value)} is not a container image reference; {IMAGE_HINT}")
        else:
            return value
        return None
