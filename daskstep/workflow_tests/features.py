"""Read a feature file with the official Gherkin parser (`gherkin-official`, as REANA does) and
bind each of its steps to the vocabulary, before any scenario runs.

Scenarios come from Gherkin's pickles, so Background steps, Scenario Outlines with their
Examples, Rules and `And`/`But` are what Gherkin says they are. A file that is not Gherkin, or
a step no phrase knows, is one line naming the file and the line: exit 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gherkin.errors import CompositeParserException, ParserException
from gherkin.parser import Parser
from gherkin.pickles.compiler import Compiler

from daskstep.errors import InputError, Problem
from daskstep.workflow_tests.step_definitions import BadArgument, BoundStep, UnknownStep, find

# Gherkin's token names, in words, for "expected ..." messages
TOKENS = {
    "#EOF": "the end of the file",
    "#Language": "# language:",
    "#TagLine": "a @tag",
    "#FeatureLine": "Feature:",
    "#RuleLine": "Rule:",
    "#BackgroundLine": "Background:",
    "#ScenarioLine": "Scenario:",
    "#ExamplesLine": "Examples:",
    "#StepLine": "a Given/When/Then step",
    "#DocStringSeparator": 'a """ doc string',
    "#TableRow": "a | table | row",
    "#Comment": "a # comment",
    "#Empty": "an empty line",
    "#Other": "text",
}
EXPECTED = re.compile(
    r"(?P<what>.*?)expected: (?P<tokens>#[\w#, ]+?)(?:, got '(?P<got>.*)')?", re.S
)
LIMIT = 120  # characters of a user's text quoted in a one-line error


def one_line(text: str, limit: int = LIMIT) -> str:
    """A user's text inside a one-line message: escapes for what would break the line."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class FeatureStep:
    keyword: str  # as written: "Then ", "And ", "* "
    text: str  # as matched: a doc string appended in quotes, as REANA does
    line: int
    bound: BoundStep


@dataclass(frozen=True)
class Scenario:
    name: str
    line: int
    steps: tuple[FeatureStep, ...]


@dataclass(frozen=True)
class Feature:
    name: str
    file: str  # as tests.files names it: what every message and the JUnit file show
    scenarios: tuple[Scenario, ...]


def _error(file: str, line: int, message: str) -> InputError:
    return InputError([Problem(f"{file}:{line}", message)])


def _parser_message(error: Exception) -> str:
    """Gherkin's message, in words: what it found, and what may stand there instead."""
    text = re.sub(r"^\(\d+:\d+\): ", "", str(error))
    found = EXPECTED.fullmatch(text)
    if not found:
        return f"{one_line(text)}; fix the line"
    tokens = [TOKENS.get(t.strip(), t.strip()) for t in found["tokens"].split(",")]
    if found["got"] is not None:
        head = f"not Gherkin: {one_line(found['got'], 60)}"
    elif "#DocStringSeparator" in found["tokens"]:
        return 'the file ends inside a doc string; close it with a """ line'
    else:
        head = found["what"].strip().rstrip(",") or "not Gherkin"
    return f"{head}; expected {', '.join(tokens)}"


def _parse(text: str, file: str) -> dict[str, Any]:
    try:
        return Parser().parse(text)
    except (CompositeParserException, ParserException) as e:
        errors = getattr(e, "errors", None) or [e]
        first = errors[0]
        line = (getattr(first, "location", None) or {}).get("line") or 1
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _error(file, line, _parser_message(first) + more) from None
    except Exception as e:  # e.g. an unknown `# language:`
        raise _error(file, 1, f"not Gherkin: {one_line(str(e))}") from None


def _lines(node: Any, found: dict[str, int]) -> dict[str, int]:
    """Every AST node's line by its id: pickles name their steps by these ids."""
    if isinstance(node, dict):
        if "id" in node and isinstance(node.get("location"), dict):
            found[node["id"]] = node["location"].get("line", 1)
        for value in node.values():
            _lines(value, found)
    elif isinstance(node, list):
        for value in node:
            _lines(value, found)
    return found


def _keywords(node: Any, found: dict[str, str]) -> dict[str, str]:
    if isinstance(node, dict):
        if "id" in node and "keyword" in node and "text" in node:
            found[node["id"]] = node["keyword"]
        for value in node.values():
            _keywords(value, found)
    elif isinstance(node, list):
        for value in node:
            _keywords(value, found)
    return found


def step_text(step: dict[str, Any]) -> str:
    """REANA's: a doc string's content follows the step's text, in double quotes."""
    argument = step.get("argument") or {}
    if "docString" in argument:
        return f'{step["text"]} "{argument["docString"]["content"]}"'
    return step["text"]


def _step(
    step: dict[str, Any], file: str, lines: dict[str, int], words: dict[str, str]
) -> FeatureStep:
    node = step["astNodeIds"][0]
    line, keyword = lines.get(node, 1), words.get(node, "")
    shown = f'"{one_line(keyword + step["text"])}"'
    if "dataTable" in (step.get("argument") or {}):
        raise _error(file, line, f"{shown} has a data table, which no workflow-test step takes; "
                     "remove the table")  # fmt: skip
    text = step_text(step)
    try:
        bound = find(step["type"], text)
    except UnknownStep as e:
        raise _error(file, line, f"unknown step {shown}; {e}") from None
    except BadArgument as e:
        raise _error(file, line, f"{shown}: {e}") from None
    return FeatureStep(keyword, text, line, bound)


def load_feature(path: Path, file: str) -> Feature:
    """The feature at `path`, every step bound; `file` is how messages name it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(file, 1, "no such feature file; write it, or fix tests.files") from None
    except IsADirectoryError:
        raise _error(file, 1, "is a folder; name a .feature file in tests.files") from None
    except OSError as e:
        raise _error(file, 1, f"cannot read it: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _error(file, line, "is not UTF-8 text; save the feature file as UTF-8") from None
    document = _parse(text, file)
    if not document.get("feature"):
        raise _error(file, 1, "has no Feature: line; start it with Feature: <what it checks>")
    document["uri"] = file
    try:
        pickles = Compiler().compile(document)
    except Exception as e:
        raise _error(file, 1, f"not Gherkin: {one_line(str(e))}") from None
    lines, words = _lines(document, {}), _keywords(document, {})
    scenarios = []
    for pickle in pickles:
        steps = tuple(_step(s, file, lines, words) for s in pickle["steps"])
        line = (pickle.get("location") or {}).get("line") or lines.get(pickle["astNodeIds"][0], 1)
        scenarios.append(Scenario(pickle["name"], line, steps))
    return Feature(document["feature"]["name"], file, tuple(scenarios))
