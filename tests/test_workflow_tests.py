"""`daskstep test` and `daskstep run --test`: REANA's workflow tests (Gherkin feature files)
against the last run in a workspace.

Unit tests build a run's workspace as `daskstep run` leaves it (status.json, the log store
written through its own writer, files) and drive the real CLI in-process. The acceptance runs
the dask-bag example for real with `--test`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from conftest import daskstep, execute_returning

from daskstep import cli
from daskstep.record import Workspace
from daskstep.run import Run
from daskstep.workflow_tests.features import load_feature
from daskstep.workflow_tests.last_run import LastRun
from sidecar.store import LogStore, Stream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "dask-bag"
NS = 10**9
T0 = 1_790_000_000  # the synthetic run's start, in seconds since the epoch

JOB_LOG = [
    "daskstep: step generate (1/2) started\n",
    "wrote 8 files x 20000 records to data/\n",
    "daskstep: step generate finished\n",
    "daskstep: step analyse (2/2) started\n",
    "connected to tls://127.0.0.1:8786 with 2 workers\n",
    "variables\n",
    "---------\n",
    "(a0,a1,mean)\n",
    "daskstep: warning: worker worker-1: paused for memory: it holds 370 MiB\n",
    "daskstep: step analyse finished\n",
]


def iso(seconds: float) -> str:
    from entrypoint.reporter import iso as to_iso

    return to_iso(seconds)


def status(state: str = "finished", exit_code: int = 0, **extra: object) -> dict:
    steps = [
        {"name": "generate", "status": "finished", "exit_code": 0, "started_at": iso(T0 + 1),
         "finished_at": iso(T0 + 2), "duration_seconds": 1.0},
        {"name": "analyse", "status": state if state != "cancelled" else "cancelled",
         "exit_code": exit_code, "started_at": iso(T0 + 2), "finished_at": iso(T0 + 95),
         "duration_seconds": 93.0},
    ]  # fmt: skip
    return {
        "status": state,
        "exit_code": exit_code,
        "workflow": "reana.yaml",
        "started_at": iso(T0),
        "finished_at": iso(T0 + 96),
        "duration_seconds": 96.0,
        "cluster": {"backend": "local", "workers_requested": 2, "workers_ready": 2},
        "steps": steps,
        **extra,
    }


def make_run(ws: Path, state: str = "finished", exit_code: int = 0, job_log=JOB_LOG) -> Path:
    """A workspace as `daskstep run` leaves it; the logs go through the store's own writer."""
    workspace = Workspace(ws)
    record = workspace.new_run()
    fill_run(record, state, exit_code, job_log)
    workspace.point_latest(record)
    (ws / "data").mkdir(exist_ok=True)
    (ws / "data" / "part-00.jsonl").write_bytes(b'{"id": 0}\n' * 1000)  # 10,000 bytes
    (ws / "histogram.png").write_bytes(b"\x89PNG" + bytes(4092))  # 4 KiB
    (ws / "analysis.py").write_text("print('hi')\n")
    return ws


def fill_run(record, state: str = "finished", exit_code: int = 0, job_log=JOB_LOG) -> None:
    """A run's status and logs, as `daskstep run` writes them into its folder."""
    record.folder.mkdir(parents=True, exist_ok=True)
    record.status_file.write_text(json.dumps(status(state, exit_code)))
    store = LogStore(record.logs)
    lines = [line.encode() for line in job_log]
    store.stream("job").append(lines, [(T0 + 1 + i) * NS for i in range(len(lines))])
    store.stream("scheduler").append(
        [b"distributed.scheduler - INFO - Receive client connection\n"]
    )
    store.stream("worker", "worker-0").append([b"Threads: 1\n", b"Memory: 1.00 GiB\n"])
    store.stream("worker", "worker-1").append([b"Threads: 1\n", b"Start worker at: tls://x\n"])
    store.close()


def latest(ws: Path) -> LastRun:
    return LastRun(Workspace(ws).find())


def write_reana(folder: Path, features: dict[str, str], outputs=("histogram.png",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in features.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    lines = ["workflow:", "  type: serial", "  specification:", "    steps:"]
    lines += ["      - name: generate", "        commands: [python make_data.py]"]
    lines += ["      - name: analyse", "        commands: [python analysis.py]"]
    lines += ["outputs:", "  files:", *(f"    - {o}" for o in outputs)]
    lines += ["tests:", "  files:", *(f"    - {name}" for name in features)]
    (folder / "reana.yaml").write_text("\n".join(lines) + "\n")
    return folder / "reana.yaml"


def dstest(*argv: str) -> int:
    """`daskstep test ARGV...`, in-process."""
    return cli.main(["test", *argv])


LOGS = """\
    Feature: Log messages

        Scenario: The generation step has produced the expected messages
            When the workflow is finished
            Then the job logs for the "generate" step should contain "wrote 8 files"

        Scenario: The analysis step has produced the expected messages
            When the workflow is finished
            Then the job logs for the "analyse" step should contain
                \"\"\"
                variables
                ---------
                (a0,a1,mean)
                \"\"\"
            And the engine logs should contain "step analyse (2/2) started"
            And the logs should contain "connected to tls://"

        Scenario: The cluster served the analysis
            When the workflow is finished
            Then the cluster should have 2 workers
            And the scheduler logs should contain "Receive client connection"
            And the worker logs should contain
                \"\"\"
                Threads: 1
                Start worker at
                \"\"\"
"""
FILES = """\
    Feature: Workspace files

        Scenario: The outputs are there
            When the workflow execution completes
            Then all the outputs should be included in the workspace
            And the workspace should include "data/part-00.jsonl"
            And the workspace should not include "results/nothing.png"
            And the size of the file "data/part-00.jsonl" should be exactly 10000 bytes
            And the size of the file "/histogram.png" should be between 4KiB and 5KiB
            And the size of the file "./histogram.png" should be more than 4000
            And the workspace size should be more than 10KiB
            And the workspace size should be less than 1MiB

        Scenario: The run took a reasonable time
            When the workflow is finished
            Then the workflow run duration should be less than 2 minutes
            And the duration of the step "analyse" should be less than 100 seconds
"""


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Path]:
    """(reana.yaml, workspace) of a finished synthetic run with the two feature files."""
    ws = make_run(tmp_path / "ws")
    reana = write_reana(
        tmp_path / "analysis", {"tests/log-messages.feature": LOGS, "tests/files.feature": FILES}
    )
    return reana, ws


def test_every_scenario_passes_and_each_is_one_line(example, capsys) -> None:
    reana, ws = example
    assert dstest(str(reana), "--workspace", str(ws)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[:3] == [
        "PASSED  Log messages: The generation step has produced the expected messages",
        "PASSED  Log messages: The analysis step has produced the expected messages",
        "PASSED  Log messages: The cluster served the analysis",
    ]
    assert lines[3:5] == [
        "PASSED  Workspace files: The outputs are there",
        "PASSED  Workspace files: The run took a reasonable time",
    ]
    junit = ws / ".daskstep" / "runs" / "1" / "tests.xml"
    assert lines[5] == (
        "workflow tests: 5 passed, 0 failed, 0 skipped (5 scenarios in 2 feature files); "
        f"JUnit XML: {junit}"
    )
    root = ET.parse(junit).getroot()
    assert [s.get("name") for s in root] == ["Log messages", "Workspace files"]
    assert [len(s) for s in root] == [3, 2] and root.get("failures") == "0"


def test_one_changed_message_fails_its_scenario_with_exit_1(example, capsys) -> None:
    reana, ws = example
    feature = reana.parent / "tests" / "log-messages.feature"
    feature.write_text(feature.read_text().replace("(a0,a1,mean)", "(a0,a1,median)"))
    junit = reana.parent / "out" / "junit.xml"
    assert dstest(str(reana), "--workspace", str(ws), "--junit", str(junit)) == 1
    out, _ = capsys.readouterr()
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    assert failed == [
        "FAILED  Log messages: The analysis step has produced the expected messages: "
        'tests/log-messages.feature:9: the job logs of step "analyse" do not contain '
        '"variables\\n---------\\n(a0,a1,median)"; its last line: "(a0,a1,mean)"'
    ]
    assert "4 passed, 1 failed, 0 skipped" in out.splitlines()[-1]
    suite = ET.parse(junit).getroot().find("testsuite[@name='Log messages']")
    failures = [(c.get("name"), c.find("failure")) for c in suite if c.find("failure") is not None]
    assert [name for name, _ in failures] == [
        "The analysis step has produced the expected messages"
    ]
    assert "(a0,a1,median)" in failures[0][1].get("message")
    assert suite.get("failures") == "1" and suite.get("tests") == "3"


def test_a_step_sees_only_its_own_lines(tmp_path: Path) -> None:
    run = latest(make_run(tmp_path))
    assert run.step_log("generate") == "wrote 8 files x 20000 records to data/\n"
    analyse = run.step_log("analyse")
    assert analyse.startswith("connected to") and "wrote 8 files" not in analyse
    assert "paused for memory" in analyse  # what happened to the cluster during the step
    assert "step analyse finished" not in analyse
    assert run.step_log("nosuch") is None
    assert "step generate (1/2) started" in run.engine_log()
    assert "wrote 8 files" not in run.engine_log()


def test_the_engine_logs_are_an_engines_stream_and_daskstep_s_own_lines(tmp_path: Path) -> None:
    ws = make_run(tmp_path)
    engine = Stream(ws / ".daskstep" / "logs" / "engine.log")  # a cwl or snakemake run's
    engine.append([b"Building DAG of jobs...\n"])
    engine.close()
    run = latest(ws)
    assert run.engine_log().startswith("Building DAG of jobs...\ndaskstep: step generate (1/2)")
    assert "Building DAG" not in run.log("job")


def test_a_step_without_marks_is_found_by_its_times(tmp_path: Path) -> None:
    """A run of a daskstep before the marks, or an engine's tool: status.json's times."""
    bare = [line for line in JOB_LOG if not line.startswith("daskstep: step")]
    run = latest(make_run(tmp_path, job_log=bare))
    assert run.step_log("generate").startswith("wrote 8 files")
    assert "wrote 8 files" not in run.step_log("analyse")


def test_when_the_workflow_is_finished_skips_on_a_failed_run(tmp_path: Path, capsys) -> None:
    ws = make_run(tmp_path / "ws", state="failed", exit_code=3)
    reana = write_reana(
        tmp_path / "a",
        {
            "t.feature": """\
                Feature: Status
                  Scenario: Finished
                    When the workflow is finished
                    Then the job logs should contain "never checked"
                  Scenario: Failed
                    Given the workflow status is "failed"
                    Then the workflow should be failed
                  Scenario: Said to be finished
                    Then the workflow status should be "finished"
            """
        },
    )
    assert dstest(str(reana), "--workspace", str(ws)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        'SKIPPED Status: Finished (the workflow is not "finished": it is "failed" (exit code 3))'
    )
    assert lines[1] == "PASSED  Status: Failed"
    assert lines[2] == (
        'FAILED  Status: Said to be finished: t.feature:9: the workflow is not "finished": '
        'it is "failed" (exit code 3)'
    )


def test_reanas_stopped_is_daskstep_cancelled(tmp_path: Path, capsys) -> None:
    ws = make_run(tmp_path / "ws", state="cancelled", exit_code=143)
    text = "Feature: S\n  Scenario: s\n    When the workflow is stopped\n    Then the workflow should be cancelled\n"  # noqa: E501
    reana = write_reana(tmp_path / "a", {"s.feature": text})
    assert dstest(str(reana), "--workspace", str(ws)) == 0
    assert capsys.readouterr().out.startswith("PASSED  S: s\n")


def test_checksums_as_reana_computes_them(tmp_path: Path, capsys) -> None:
    ws = make_run(tmp_path / "ws")
    data = (ws / "data" / "part-00.jsonl").read_bytes()
    sums = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "SHA512": hashlib.sha512(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "adler32": "0x" + f"{zlib.adler32(data):x}",
    }
    steps = "\n".join(
        f'    And the {a} checksum of the file "data/part-00.jsonl" should be "{s}"'
        for a, s in sums.items()
    )
    text = "Feature: C\n  Scenario: sums\n    When the workflow is finished\n"
    text += f"    Then the workflow should be finished\n{steps}\n"
    text += (
        '  Scenario: wrong\n    Then the md5 checksum of the file "analysis.py" should be "00"\n'
    )
    reana = write_reana(tmp_path / "a", {"c.feature": text})
    assert dstest(str(reana), "--workspace", str(ws)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PASSED  C: sums"
    md5 = hashlib.md5(b"print('hi')\n").hexdigest()
    assert (
        out[1]
        == f'FAILED  C: wrong: c.feature:10: the md5 checksum of "analysis.py" is {md5}, not 00'
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            'the workspace should contain "results/plot.png"',
            'the workspace does not contain "results/plot.png"',
        ),
        ("the workspace should not include analysis.py", 'the workspace contains "analysis.py"'),
        (
            'the file "analysis.py" should contain "bye"',
            'the file "analysis.py" does not contain "bye"',
        ),
        (
            'the size of the file "histogram.png" should be less than 1KiB',
            'the size of "histogram.png" is 4096 bytes, not less than 1024',
        ),
        (
            "the workspace size should be less than 1KiB",
            "the workspace holds 14108 bytes, more than 1024",
        ),
        (
            'the duration of the step "analyse" should be less than 1 minutes',
            'the step "analyse" took 1.55 minutes, not less than 1 minutes',
        ),
        (
            "the workflow run duration should be less than 90 seconds",
            "the workflow took 96.0 seconds, not less than 90 seconds",
        ),
        (
            'the job logs for the "nosuch" step should contain "x"',
            'the run has no step "nosuch"; its steps: generate, analyse',
        ),
        ("the cluster should have 3 workers", "the cluster had 2 workers ready, not 3"),
        (
            'the worker logs should contain "Threads: 2"',
            'no worker log contains "Threads: 2" (worker-0, worker-1)',
        ),
        (
            'the scheduler logs should contain "Scheduler at"',
            'the scheduler logs do not contain "Scheduler at"',
        ),
        (
            "all the outputs should be included in the workspace",
            'the workspace does not contain the output "results/plot.png"',
        ),
    ],
)
def test_a_failing_check_says_what_it_found(
    tmp_path: Path, capsys, step: str, message: str
) -> None:
    ws = make_run(tmp_path / "ws")
    text = f'Feature: F\n  Scenario: s\n    Then {step}\n    And the job logs should contain "x"\n'
    reana = write_reana(
        tmp_path / "a", {"f.feature": text}, outputs=("histogram.png", "results/plot.png")
    )
    assert dstest(str(reana), "--workspace", str(ws)) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"FAILED  F: s: f.feature:3: {message}"


def test_gherkin_forms_become_scenarios(tmp_path: Path) -> None:
    """Background, Scenario Outline with Examples, Rule, `*`, And, and any case: Gherkin's."""
    (tmp_path / "x.feature").write_text(
        textwrap.dedent(
            """\
            Feature: Forms
              Background:
                Given the workflow is finished
              Scenario Outline: File <name>
                * THE WORKSPACE SHOULD INCLUDE "<name>"
                But the workspace should not contain <other>
                Examples:
                  | name        | other |
                  | analysis.py | x.py  |
                  | data        | y.py  |
              Rule: cluster
                Scenario: Workers
                  Then the cluster should have 1 worker
            """
        )
    )
    feature = load_feature(tmp_path / "x.feature", "x.feature")
    assert [(s.name, s.line, len(s.steps)) for s in feature.scenarios] == [
        ("File analysis.py", 9, 3),
        ("File data", 10, 3),
        ("Workers", 12, 2),
    ]
    assert [s.line for s in feature.scenarios[0].steps] == [3, 5, 6]


def test_reanas_demo_feature_files_are_understood(tmp_path: Path) -> None:
    """Steps as REANA's demo workflows write them (reana-demo-root6-roofit's tests)."""
    (tmp_path / "demo.feature").write_text(
        textwrap.dedent(
            """\
            Feature: ROOT6 workflow checks
                Scenario: The workflow start has produced the expected messages
                    When the workflow is finished
                    Then the engine logs should contain "Publishing step:0, cmd: mkdir -p results"
                    And the engine logs should contain
                        \"\"\"
                        Publishing step:0, cmd: g++ -g -O3 -Wall -Wextra -Wpedantic -o skim skim.cxx
                        \"\"\"
                Scenario: The fitting step has produced the expected messages
                    When the workflow is finished
                    Then the job logs for the "fitdata" step should contain "MIGRAD MINIMIZATION HAS CONVERGED."
                    And the job logs for the step "fitdata" should contain "x"
                Scenario: Files
                    When the workflow execution completes
                    Then the workspace should include "code/gendata.C"
                    And the size of the file "results/data.root" should be between 150KiB and 160KiB
                    And the sha256 checksum of the file "results/plot.png" should be "54165023803ce58f962816c47fe597c5df2cf24c26fa4821bb5e96f7d1b68d0b"
                    And the workspace size should be more than 150KiB
                    And the workspace size should be less than 250KiB
                    And results/plot.png should be in the workspace
                    And the file "results/fit.log" should include "converged"
                    And the size of the file "results/data.root" should be exactly 1.5 MiB
                Scenario: Duration
                    When the workflow status is "finished"
                    Then the workflow run duration should be less than 4 minutes
                    And the duration of the step "gendata" should be less than 2 minutes
                    And the outputs should be included in the workspace
                    And the workflow should be finished
            """  # noqa: E501
        )
    )
    feature = load_feature(tmp_path / "demo.feature", "demo.feature")
    assert [len(s.steps) for s in feature.scenarios] == [3, 3, 9, 5]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("Feature: x\n  Scenario: s\n    Then the wrkflow should be finished\n", 3,
         'unknown step "Then the wrkflow should be finished"; did you mean '
         '"the workflow should be {status}"?'),
        ("Feature: x\n  Scenario: s\n    When the workspace should include \"a\"\n", 3,
         'unknown step "When the workspace should include "a""; it is a Then step; '
         "write it after Then"),
        ("Feature: x\n  Scenario: s\n    Then the workflow should be done\n", 3,
         '"Then the workflow should be done": \'done\' is not a workflow status; use one of '
         "created, queued, pending, running, finished, failed, stopped, cancelled, deleted"),
        ("Feature: x\n\n  Scenario: s\n    Given a\n  not a step\n", 5,
         "not Gherkin: not a step; expected the end of the file, a | table | row, a \"\"\" doc "
         "string, a Given/When/Then step, a @tag, Examples:, Scenario:, Rule:, a # comment, "
         "an empty line"),
        ('Feature: x\n Scenario: s\n  Then the logs should contain\n  """\n  open', 6,
         'the file ends inside a doc string; close it with a """ line'),
        ("", 1, "has no Feature: line; start it with Feature: <what it checks>"),
        ('Feature: x\n Scenario: s\n  Then the file "../x" should contain "a"\n', 3,
         "\"Then the file \"../x\" should contain \"a\"\": '../x' is not a path inside the "
         'workspace; write e.g. "results/plot.png"'),
    ],
)  # fmt: skip
def test_a_bad_feature_file_is_one_line_naming_file_and_line(
    example, capsys, text: str, line: int, problem: str
) -> None:
    reana, ws = example
    (reana.parent / "tests" / "files.feature").write_text(text)
    assert dstest(str(reana), "--workspace", str(ws)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: tests/files.feature:{line}: {problem}\n"


def test_missing_pieces_are_one_line_each(tmp_path: Path, capsys) -> None:
    reana = write_reana(tmp_path / "a", {"tests/gone.feature": "Feature: x\n"})
    (reana.parent / "tests" / "gone.feature").unlink()
    assert dstest(str(reana), "--workspace", str(make_run(tmp_path / "ws"))) == 2
    assert capsys.readouterr().err == (
        "error: tests/gone.feature:1: no such feature file; write it, or fix tests.files\n"
    )
    reana = write_reana(tmp_path / "b", {"t.feature": "Feature: x\n"})
    assert dstest(str(reana), "--workspace", str(tmp_path / "empty")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --workspace: no run in ") and err.count("\n") == 1
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "reana.yaml").write_text(
        "workflow: {type: serial, specification: {steps: [{commands: [x]}]}}\n"
    )
    assert dstest(str(tmp_path / "c" / "reana.yaml")) == 2
    assert capsys.readouterr().err.endswith(
        "reana.yaml: tests.files: no feature files; add tests: files: [tests/x.feature]\n"
    )


def test_tests_files_reach_the_workflow_and_are_checked(tmp_path: Path, capsys) -> None:
    from daskstep.workflow.limits import load_limits
    from daskstep.workflow.spec import load_workflow

    reana = write_reana(tmp_path, {"tests/a.feature": "Feature: a\n", "b.feature": "Feature: b\n"})
    workflow, _ = load_workflow(reana, load_limits(None))
    assert workflow.test_files == ("tests/a.feature", "b.feature")
    reana.write_text(reana.read_text().replace("    - b.feature", "    - /etc/b.feature"))
    assert cli.main(["validate", str(reana)]) == 2
    assert capsys.readouterr().err == (
        f"error: {reana}: tests.files[1]: '/etc/b.feature' is outside the workspace; give a path "
        "relative to the workflow's folder, without a leading / or ..\n"
    )


def test_run_test_checks_feature_files_before_anything_starts(example, capsys, monkeypatch) -> None:
    reana, ws = example
    monkeypatch.setattr(Run, "execute", lambda self: pytest.fail("the run started"))
    (reana.parent / "tests" / "files.feature").write_text("Feature: x\n Scenario: y\n  Then z\n")
    argv = ["run", str(reana), "--workspace", str(ws), "--test", "--secrets", str(reana.parent)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.endswith(
        'error: tests/files.feature:3: unknown step "Then z"; write one of the steps '
        "daskstep test --steps lists\n"
    )


@pytest.mark.parametrize(("workflow_code", "expected"), [(0, 0), (3, 3), (143, 143)])
def test_run_test_keeps_a_failed_workflows_code(
    example, capsys, monkeypatch, workflow_code: int, expected: int
) -> None:
    reana, ws = example

    def execute(run: Run) -> int:  # the run as the synthetic one, ending with `workflow_code`
        fill_run(run.record)
        return execute_returning(workflow_code)(run)

    monkeypatch.setattr(Run, "execute", execute)
    argv = ["run", str(reana), "--workspace", str(ws), "--test", "--secrets", str(reana.parent)]
    assert cli.main(argv) == expected
    out = capsys.readouterr().out
    assert ("workflow tests: 5 passed" in out) == (workflow_code != 143)  # a cancel: no tests


@pytest.mark.integration
@pytest.mark.slow
def test_the_dask_bag_example_runs_and_passes_its_tests(tmp_path: Path) -> None:
    """The acceptance: the seed's shape with a tests: section, for real; one changed message
    makes it fail with exit 1, the scenario named, and the JUnit file naming the failure."""
    analysis = tmp_path / "analysis"
    shutil.copytree(EXAMPLE, analysis, ignore=shutil.ignore_patterns("__pycache__"))
    proc = daskstep(
        "run", str(analysis / "reana.yaml"), "--workspace", str(tmp_path / "ws"), "--test"
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    results = [ln for ln in out.splitlines() if ln.startswith(("PASSED", "FAILED", "SKIPPED"))]
    assert len(results) == 9 and all(ln.startswith("PASSED") for ln in results), out
    assert "workflow tests: 9 passed, 0 failed, 0 skipped" in out

    feature = analysis / "tests" / "log-messages.feature"
    feature.write_text(feature.read_text().replace("kept 110,705 records", "kept 110,706 records"))
    junit = tmp_path / "junit.xml"
    argv = ["run", str(analysis / "reana.yaml"), "--workspace", str(tmp_path / "ws2"), "--test"]
    proc = daskstep(*argv, "--junit", str(junit))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    failed = [ln for ln in out.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1, out
    assert failed[0].startswith(
        "FAILED  Log messages: The analysis step has selected the expected records on the "
        'cluster: tests/log-messages.feature:17: the job logs of step "analyse" do not contain '
        '"kept 110,706 records'
    )
    cases = ET.parse(junit).getroot().iter("testcase")
    failures = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failures == ["The analysis step has selected the expected records on the cluster"]
    # the same run, checked again afterwards with the example's own features: all pass
    proc = daskstep("test", str(EXAMPLE / "reana.yaml"), "--workspace", str(tmp_path / "ws2"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == "", out + err
