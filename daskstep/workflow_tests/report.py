"""What the workflow tests found: one line per scenario, a summary, and a JUnit XML file for
CI systems (one testsuite per feature file, one testcase per scenario), written with the
standard library."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from daskstep.workflow_tests.features import one_line

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0 chars


@dataclass(frozen=True)
class ScenarioResult:
    feature: str
    file: str
    scenario: str
    line: int
    outcome: str  # passed, failed or skipped
    step: str = ""  # the step that failed or skipped it, as written
    message: str = ""
    seconds: float = 0.0

    def line_of_output(self) -> str:
        head = f"{self.outcome.upper():<8}{one_line(self.feature)}: {one_line(self.scenario)}"
        if self.outcome == FAILED:
            return f"{head}: {one_line(self.message, 400)}"
        if self.outcome == SKIPPED and self.message:
            return f"{head} ({one_line(self.message, 200)})"
        return head


def counts(results: list[ScenarioResult]) -> dict[str, int]:
    return {k: sum(r.outcome == k for r in results) for k in (PASSED, FAILED, SKIPPED)}


def print_results(results: list[ScenarioResult], junit: Path | None, out: TextIO) -> None:
    for result in results:
        out.write(result.line_of_output() + "\n")
    n = counts(results)
    files = len({r.file for r in results})
    summary = (
        f"workflow tests: {n[PASSED]} passed, {n[FAILED]} failed, {n[SKIPPED]} skipped "
        f"({len(results)} scenario{'s' * (len(results) != 1)} in {files} feature "
        f"file{'s' * (files != 1)})"
    )
    out.write(summary + (f"; JUnit XML: {junit}" if junit else "") + "\n")
    out.flush()


def _xml(text: str) -> str:
    return NOT_XML.sub("\ufffd", text)


def junit_tree(results: list[ScenarioResult], features: list[tuple[str, str]]) -> ET.Element:
    """`features`: (name, file) of each feature file, in order, so an empty one shows too."""
    root = ET.Element("testsuites", name="daskstep workflow tests")
    for name, file in features:
        mine = [r for r in results if r.file == file]
        n = counts(mine)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(name or file),
            file=_xml(file),
            tests=str(len(mine)),
            failures=str(n[FAILED]),
            errors="0",
            skipped=str(n[SKIPPED]),
            time=f"{sum(r.seconds for r in mine):.3f}",
        )
        for r in mine:
            case = ET.SubElement(
                suite,
                "testcase",
                name=_xml(r.scenario),
                classname=_xml(name or file),
                file=_xml(file),
                line=str(r.line),
                time=f"{r.seconds:.3f}",
            )
            if r.outcome == FAILED:
                failure = ET.SubElement(case, "failure", message=_xml(r.message), type="Failed")
                failure.text = _xml(f"{r.step}\n{r.message}")
            elif r.outcome == SKIPPED:
                ET.SubElement(case, "skipped", message=_xml(r.message))
    n = counts(results)
    root.set("tests", str(len(results)))
    root.set("failures", str(n[FAILED]))
    root.set("errors", "0")
    root.set("skipped", str(n[SKIPPED]))
    return root


def write_junit(path: Path, results: list[ScenarioResult], features: list[tuple[str, str]]) -> None:
    tree = ET.ElementTree(junit_tree(results, features))
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
