"""CWL and Snakemake workflows (`workflow.type: cwl|snakemake`): the spec checks, the tools'
status files folded into status.json, the tool wrapper, and real runs on the local backend
whose steps compute on the Dask cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import daskstep, descendants, wait_for, wait_gone

from daskstep.backends.registry import kind_of
from daskstep.engines.engine_step import ToolSteps, engine_problems, step_entry
from daskstep.engines.tool import JOB_LOG_ENV, OUTPUT_ENV, STEPS_ENV, stream_id
from daskstep.errors import InputError
from daskstep.status import RunStatus
from daskstep.workflow.inputs import check_inputs
from daskstep.workflow.limits import load_limits
from daskstep.workflow.spec import check

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGE = "docker.io/daskstep/test:1.0"


def document(kind: str, **workflow: object) -> dict:
    return {
        "inputs": {"files": ["wf"], "parameters": {"input": "job.yml", "n": 5}},
        "workflow": {"type": kind, **workflow},
    }


# -- the spec -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cwl", "snakemake"])
def test_an_engine_workflow_keeps_its_file_and_typed_parameters(kind: str) -> None:
    workflow, problems = check(document(kind, file="workflow/main"), load_limits(None))
    assert problems == []
    assert workflow is not None
    assert (workflow.type, workflow.file, workflow.steps) == (kind, "workflow/main", ())
    assert dict(workflow.parameters) == {"input": "job.yml", "n": 5}  # 5 stays a number


@pytest.mark.parametrize(
    ("workflow", "field", "fragment"),
    [
        ({"type": "cwl"}, "workflow.file", "needs file: with the path of its .cwl file"),
        ({"type": "snakemake", "file": ""}, "workflow.file", "expected a path"),
        ({"type": "snakemake", "file": ["Snakefile"]}, "workflow.file", "expected a path"),
        ({"type": "cwl", "file": "../wf.cwl"}, "workflow.file", "outside the workspace"),
        ({"type": "cwl", "file": "/abs/wf.cwl"}, "workflow.file", "outside the workspace"),
        ({"type": "nextflow", "file": "main.nf"}, "workflow.type", "serial, cwl or snakemake"),
        ({"type": "yadage", "file": "wf.yaml"}, "workflow.type", "is not supported"),
    ],
)
def test_bad_engine_workflows_are_one_line_each(
    tmp_path: Path, workflow: dict, field: str, fragment: str
) -> None:
    path = tmp_path / "reana.yaml"
    path.write_text(json.dumps({"workflow": workflow}))
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert f"{field}: " in lines[0] and fragment in lines[0] and "; " in lines[0]
    assert "Traceback" not in done.stderr


def test_a_specification_beside_an_engine_file_is_a_warning() -> None:
    spec = document("cwl", file="wf.cwl", specification={"steps": []})
    workflow, problems = check(spec, load_limits(None))
    assert workflow is not None
    assert [(p.severity, p.path) for p in problems] == [("warning", "workflow.specification")]


def _engine_workflow(tmp_path: Path, kind: str, **parameters: object) -> Path:
    spec = {
        "inputs": {"parameters": parameters} if parameters else {},
        "workflow": {"type": kind, "file": "wf", "resources": {"dask": {"image": IMAGE}}},
    }
    path = tmp_path / "reana.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_run_refuses_a_missing_workflow_file_before_anything_starts(tmp_path: Path) -> None:
    run = daskstep("run", str(_engine_workflow(tmp_path, "cwl")))
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2
    assert "error:" in err and "workflow.file: 'wf' is not a file in" in err
    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
    assert not (tmp_path / ".daskstep").exists()  # nothing started, nothing written


def test_run_refuses_other_backends_and_a_missing_input_file(tmp_path: Path) -> None:
    path = _engine_workflow(tmp_path, "snakemake", input="config.yaml")
    (tmp_path / "wf").write_text("rule all:\n    shell: 'true'\n")
    run = daskstep("run", str(path), "--backend", "docker")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 2, err
    assert "--backend: docker cannot run snakemake workflows yet; use --backend local" in err
    assert "inputs.parameters.input: 'config.yaml' is not a file in" in err


def test_an_input_file_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text("n: 1\n")
    folder = tmp_path / "analysis"
    folder.mkdir()
    path = _engine_workflow(folder, "snakemake", input="../outside.yaml")
    (folder / "wf").write_text("rule all:\n    shell: 'true'\n")
    workflow, _ = check(json.loads(path.read_text()), load_limits(None), path)
    assert workflow is not None
    with pytest.raises(InputError) as caught:
        check_inputs(workflow)
    assert [p.path for p in caught.value.problems] == ["inputs.parameters.input"]
    assert "is outside the workspace" in caught.value.problems[0].message


def test_render_refuses_an_engine_workflow(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "render", str(_engine_workflow(tmp_path, "cwl"))]
        + ["--backend", "kubernetes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith(
        "--backend: kubernetes cannot run cwl workflows yet; use daskstep run"
    )
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_engine_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    path = _engine_workflow(tmp_path, "cwl")
    (tmp_path / "wf").write_text("cwlVersion: v1.2\n")
    workflow, _ = check(json.loads(path.read_text()), load_limits(None), path)
    assert workflow is not None
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "cwltool" else real(name)
    )
    [problem] = engine_problems(workflow, kind_of("local"))
    assert problem.path == "workflow.type"
    assert "cwltool, which is not installed; pip install 'daskstep[engines]'" in problem.message


# -- the tools' status files, folded ---------------------------------------------------------------
class _Workflow:
    path = Path("reana.yaml")
    dask = None
    steps = ()


def test_tool_status_files_become_steps_as_they_appear_and_end(tmp_path: Path) -> None:
    status = RunStatus(tmp_path / "status.json", _Workflow(), None)
    tools = ToolSteps(tmp_path, status)
    running = {"name": "sum/range", "reason": "Running", "exit_code": None, "started_at": "t0"}
    (tmp_path / "01-sum_range.json").write_text(json.dumps(running))
    (tmp_path / "02-check.json").write_text("{ half written")
    tools.poll()
    assert [(s["name"], s["status"]) for s in status.steps] == [("sum/range", "running")]
    done = {"reason": "Completed", "exit_code": 0, "started_at": "t0", "finished_at": "t1"}
    (tmp_path / "01-sum_range.json").write_text(json.dumps({**done, "duration_seconds": 1.5}))
    failed = {**done, "reason": "Error", "exit_code": 3, "name": "check"}
    (tmp_path / "02-check.json").write_text(json.dumps(failed))
    (tmp_path / "10-late.json").write_text(json.dumps({**running, "name": "late"}))
    tools.poll()
    tools.finish(cancelled=False)
    steps = json.loads((tmp_path / "status.json").read_text())["steps"]
    assert [(s["name"], s["status"], s["exit_code"]) for s in steps] == [
        ("sum/range", "finished", 0),  # the name from the first read: the final one has none
        ("check", "failed", 3),
        ("late", "failed", None),  # its entrypoint never wrote: killed with the engine
    ]
    assert steps[0]["duration_seconds"] == 1.5
    assert tools.first_failure() == ("check", 3)


def test_a_status_file_without_a_name_is_named_after_its_file() -> None:
    entry = step_entry("compute", {"reason": "Completed", "exit_code": 0, "started_at": "t"})
    assert (entry["name"], entry["status"]) == ("compute", "finished")


# -- the tool wrapper, as the engine starts it -----------------------------------------------------
def test_the_tool_wrapper_sends_engine_bound_output_to_the_job_log(tmp_path: Path) -> None:
    engine_log = tmp_path / "engine.log"
    job_log = tmp_path / "job.log"
    with open(engine_log, "ab") as out:
        env = dict(os.environ)
        env.update(
            {
                STEPS_ENV: str(tmp_path / "steps"),
                JOB_LOG_ENV: str(job_log),
                OUTPUT_ENV: stream_id(out.fileno()),
                "DASKSTEP_VERSIONS": "off",
            }
        )
        for key in ("DASK_SCHEDULER_URI", "DASK_SCHEDULER_ADDRESS", "DASKSTEP_SCHEDULER"):
            env.pop(key, None)
        command = "echo to-stdout; echo to-stderr >&2; echo captured > captured.txt; exit 3"
        done = subprocess.run(
            [sys.executable, "-m", "daskstep.engines.tool", "--name", "my rule", "--"]
            + ["sh", "-c", command],
            stdout=out,
            stderr=out,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
    assert done.returncode == 3
    assert engine_log.read_text() == ""
    lines = job_log.read_text().splitlines()
    assert lines[0] == "daskstep: step my rule started"
    assert "to-stdout" in lines and "to-stderr" in lines
    assert lines[-1] == "daskstep: step my rule failed with exit code 3"
    assert (tmp_path / "captured.txt").read_text() == "captured\n"
    status = json.loads((tmp_path / "steps" / "01-my_rule.json").read_text())
    assert (status["name"], status["reason"], status["exit_code"]) == ("my rule", "Error", 3)


# -- real runs ----------------------------------------------------------------------------------
class _Watch:
    """Every process the run had at any moment, so that none may be left after it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.seen |= descendants(self.pid)

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def _run(folder: Path, workspace: Path, *args: str) -> tuple[int, str, str, set[int]]:
    run = daskstep("run", str(folder / "reana.yaml"), "--workspace", str(workspace), *args)
    watch = _Watch(run.pid)
    try:
        out, err = run.communicate(timeout=300)
    finally:
        seen = watch.stop()
    return run.returncode, out, err, seen


def _logs(workspace: Path, component: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "logs", "--workspace", str(workspace)]
        + ["--component", component],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


ENGINE_LINES = {"cwl": "Final process status is success", "snakemake": "steps (100%) done"}
FAILED_MARK = "daskstep: step compute failed with exit code 3"
FAILED_LINES = {"cwl": "Final process status is permanentFail", "snakemake": "Error in rule"}


def _copy(kind: str, tmp_path: Path) -> Path:
    folder = tmp_path / "analysis"
    shutil.copytree(EXAMPLES / f"{kind}-dask", folder)
    return folder


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cwl", "snakemake"])
def test_two_steps_compute_on_the_cluster(tmp_path: Path, kind: str) -> None:
    folder, workspace = _copy(kind, tmp_path), tmp_path / "ws"
    code, out, err, seen = _run(folder, workspace)
    assert code == 0, err
    assert wait_gone(seen, 10) == set(), "processes of the run left running"
    status = json.loads((workspace / ".daskstep" / "status.json").read_text())
    assert (status["status"], status["exit_code"]) == ("finished", 0)
    steps = [(s["name"], s["status"], s["exit_code"]) for s in status["steps"]]
    assert steps == [("compute", "finished", 0), ("check", "finished", 0)]
    assert all(s["started_at"] and s["finished_at"] for s in status["steps"])
    assert status["engine"]["exit_code"] == 0 and status["engine"]["type"] == kind
    assert status["cluster"]["workers_ready"] == 2
    job = _logs(workspace, "job")
    assert "sum of range(1000) = 499500, computed on 2 workers" in job
    assert "checked on the cluster: 499500 == 499500" in job
    assert "daskstep: step compute started" in job and "daskstep: step check finished" in job
    engine = _logs(workspace, "engine")
    assert ENGINE_LINES[kind] in engine
    assert "499500" not in engine  # the steps' output is the job log's, not the engine's
    if kind == "snakemake":  # the command line as it ran, its interpreter too
        assert f"daskstep: {sys.executable} -m snakemake --snakefile" in engine
    output = "outputs/checked.txt" if kind == "cwl" else "results/checked.txt"
    assert (workspace / output).read_text() == "checked 499500\n"
    # on the terminal too, as a serial step's output, in the order it was written
    order = [
        "daskstep: step compute started",
        "sum of range(1000) = 499500, computed on 2 workers",
        "daskstep: step compute finished",
        "daskstep: step check started",
        "checked on the cluster: 499500 == 499500",
        "daskstep: step check finished",
    ]
    lines = out.splitlines()
    assert [line for line in lines if line in order] == order, out


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cwl", "snakemake"])
def test_a_failing_step_fails_the_run_with_its_exit_code(tmp_path: Path, kind: str) -> None:
    folder, workspace = _copy(kind, tmp_path), tmp_path / "ws"
    (folder / "sum_range.py").write_text("print('giving up')\nraise SystemExit(3)\n")
    code, out, err, seen = _run(folder, workspace)
    assert code == 3, err
    assert wait_gone(seen, 10) == set(), "processes of the run left running"
    status = json.loads((workspace / ".daskstep" / "status.json").read_text())
    assert (status["status"], status["exit_code"]) == ("failed", 3)
    assert [(s["name"], s["exit_code"]) for s in status["steps"]] == [("compute", 3)]
    assert status["engine"]["exit_code"] != 0
    assert "giving up" in _logs(workspace, "job")
    assert FAILED_LINES[kind] in _logs(workspace, "engine")
    assert not (workspace / "results" / "checked.txt").exists()
    # the tool's lines and its wrapper's marks, in order in the job log and on the terminal;
    # the engine's own lines reach the terminal through another pipe, and may come between
    assert "giving up\ndaskstep: step compute failed with exit code 3\n" in _logs(workspace, "job")
    order = ["daskstep: step compute started", "giving up", FAILED_MARK]
    assert [line for line in out.splitlines() if line in order] == order, out


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_mid_rule_cancels_the_run_and_leaves_nothing(
    tmp_path: Path, reaper: list[int]
) -> None:
    path = _engine_workflow(tmp_path, "snakemake")
    (tmp_path / "wf").write_text(
        'rule slow:\n    output: "done.txt"\n'
        '    shell: "touch started; sleep 300; touch {output}"\n'
    )
    run = daskstep("run", str(path))
    reaper.append(run.pid)
    watch = _Watch(run.pid)
    wait_for(lambda: (tmp_path / "started").exists(), 120, "the rule to start")
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    seen = watch.stop()
    assert run.returncode == 143, err
    assert wait_gone(seen, 10) == set(), "processes of the run left running"
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert (status["status"], status["exit_code"]) == ("cancelled", 143)
    assert [(s["name"], s["status"]) for s in status["steps"]] == [("slow", "cancelled")]
    assert status["engine"]["status"] == "cancelled"
    assert not (tmp_path / "done.txt").exists()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "text", "said"),
    [
        ("cwl", "cwlVersion: v1.2\nclass: Nonsense\n", "Tool definition failed validation"),
        ("snakemake", "rule broken:\n    shell: 'true'\n  oops(\n", "IndentationError"),
    ],
)
def test_a_workflow_file_the_engine_refuses_fails_with_its_code(
    tmp_path: Path, kind: str, text: str, said: str
) -> None:
    path = _engine_workflow(tmp_path, kind)
    (tmp_path / "wf").write_text(text)
    code, _, err, seen = _run(tmp_path, tmp_path)
    assert code == 1, err
    assert wait_gone(seen, 10) == set(), "processes of the run left running"
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert (status["status"], status["exit_code"], status["steps"]) == ("failed", 1, [])
    assert "engine failed with exit code 1; see `daskstep logs --component engine`" in err
    assert said in _logs(tmp_path, "engine")
    assert path.exists()
