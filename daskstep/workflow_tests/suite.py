"""`daskstep test`: the feature files of a reana.yaml's `tests.files`, run against the last run
in the workspace, as `reana-client test` runs them against a run on REANA.

A scenario runs its steps in order: the first failing step fails it and the steps after it are
skipped; a When step whose condition does not hold for this run (the workflow is not finished)
skips the scenario. Exit 0 when no scenario failed, 1 when one did.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

from daskstep.errors import InputError, Problem
from daskstep.record import RunFolder
from daskstep.workflow.spec import Workflow
from daskstep.workflow_tests.checks import Failed, Skipped
from daskstep.workflow_tests.features import Feature, Scenario, load_feature, one_line
from daskstep.workflow_tests.last_run import LastRun
from daskstep.workflow_tests.report import (
    FAILED,
    PASSED,
    SKIPPED,
    ScenarioResult,
    print_results,
    write_junit,
)


def load_features(workflow: Workflow) -> list[Feature]:
    """Every feature file of `tests.files`, parsed and bound: relative to the reana.yaml, as
    reana-client reads them from the analysis' folder. All are read before any scenario runs,
    so a mistake in the last file does not wait for the first file's checks."""
    if not workflow.test_files:
        raise InputError(
            [Problem("tests.files", "no feature files; add tests: files: [tests/x.feature]")],
            source=str(workflow.path),
        )
    base = workflow.path.parent
    return [load_feature(base / name, name) for name in workflow.test_files]


def find_reana_yaml(run: RunFolder) -> Path:
    """The reana.yaml a run ran (status.json names it, from its own folder: the run may have
    copied its inputs elsewhere), else the workspace's own."""
    try:
        named = json.loads(run.status_file.read_text()).get("workflow")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str) and Path(named).is_absolute() and Path(named).is_file():
        return Path(named)
    workspace = run.workspace
    if (workspace / "reana.yaml").is_file():
        return workspace / "reana.yaml"
    raise InputError(
        [
            Problem(
                "REANA_YAML",
                f"no reana.yaml in {workspace} and none named by its {run.name}; "
                "give it: daskstep test REANA_YAML --workspace DIR",
            )
        ]
    )


def run_scenario(feature: Feature, scenario: Scenario, run: LastRun) -> ScenarioResult:
    started = time.monotonic()

    def result(outcome: str, step: str = "", message: str = "") -> ScenarioResult:
        seconds = time.monotonic() - started
        return ScenarioResult(
            feature.name, feature.file, scenario.name, scenario.line, outcome, step, message,
            seconds,
        )  # fmt: skip

    for step in scenario.steps:
        written = f"{step.keyword}{step.text}".strip()
        try:
            step.bound.check(run)
        except Skipped as e:
            return result(SKIPPED, written, str(e))
        except Failed as e:
            return result(FAILED, written, f"{feature.file}:{step.line}: {e}")
        except Exception as e:  # a check that could not look: a failure, with what stopped it
            message = f"{feature.file}:{step.line}: {type(e).__name__}: {one_line(str(e))}"
            return result(FAILED, written, message)
    return result(PASSED)


def check_run(
    features: list[Feature],
    workflow: Workflow,
    record: RunFolder,
    junit: Path | None = None,
    out: TextIO | None = None,
) -> int:
    """Run every scenario against one run; 0 if none failed, else 1. The JUnit file goes into
    the run's folder, unless `junit` says otherwise."""
    out = out or sys.stdout
    run = LastRun(record, (*workflow.output_files, *workflow.output_directories))
    results = [run_scenario(f, s, run) for f in features for s in f.scenarios]
    junit = junit or record.tests_xml
    write_junit(junit, results, [(f.name, f.file) for f in features])
    print_results(results, junit, out)
    return 1 if any(r.outcome == FAILED for r in results) else 0


__all__ = ["FAILED", "PASSED", "SKIPPED", "check_run", "find_reana_yaml", "load_features"]
