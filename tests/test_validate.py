"""reana.yaml and limits validation: every rule, as a table, plus the `daskstep validate` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from validate_cases import (
    CASES,
    DASK,
    DELETE,
    DSK,
    IMAGE,
    RES,
    ST0,
    spec,
)

from daskstep.errors import InputError
from daskstep.workflow.limits import Limits, format_memory, load_limits, parse_memory
from daskstep.workflow.spec import DaskResources, Step, check, load_workflow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def limits() -> Limits:
    return load_limits()


@pytest.mark.parametrize(
    ("document", "errors", "warnings", "fragments"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_check_table(
    limits: Limits,
    document: Any,
    errors: set[str],
    warnings: set[str],
    fragments: tuple[str, ...],
) -> None:
    workflow, problems = check(document, limits)
    assert {p.path for p in problems if p.severity == "error"} == errors
    assert {p.path for p in problems if p.severity == "warning"} == warnings
    assert (workflow is None) == bool(errors)
    text = "\n".join(p.message for p in problems)
    for fragment in fragments:
        assert fragment in text
    for problem in problems:
        assert "\n" not in problem.message and "; " in problem.message, problem
        assert len(problem.message) < 400 and "Traceback" not in problem.message


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_defaults_and_expansion_fill_the_workflow(limits: Limits) -> None:
    document = spec(**{DSK: {"image": IMAGE}})
    document["workflow"]["specification"]["steps"].append({"commands": ["echo ${n} $$HOME"]})
    workflow, problems = check(document, limits)
    assert problems == [] and workflow is not None
    assert workflow.dask == DaskResources(IMAGE, 2, "2Gi", 4)
    assert workflow.dask.memory_bytes == 2 * 1024**3
    assert workflow.steps == (
        Step("process", IMAGE, ("python analysis.py -n 3",)),
        Step("step-2", None, ("echo 3 $HOME",)),
    )
    assert (workflow.kerberos, workflow.voms_proxy) == (False, False)
    assert workflow.input_files == ("analysis.py",)
    assert workflow.input_directories == ("data",)
    assert workflow.output_files == ("results/plot.png",)
    assert workflow.output_directories == ("results",)


def test_no_dask_section_means_no_cluster(limits: Limits) -> None:
    workflow, _ = check(spec(**{f"{RES}__dask": DELETE}), limits)
    assert workflow is not None and workflow.dask is None


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2Gi", 2 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1K", 1000),
        ("3E", 3 * 1000**6),
        ("1Ki", 1024),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["0Gi", "2GB", "2", "-1Gi", "1.5Gi", "Gi", " 2Gi", "2gi"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory(text)


def test_format_memory() -> None:
    assert format_memory(16 * 1024**3) == "16Gi"
    assert format_memory(1536 * 1024**2) == "1536Mi"
    assert format_memory(5 * 10**9) == "5G"
    assert format_memory(1234567) == "1234567"


def test_packaged_limits_are_reanas() -> None:
    assert load_limits() == Limits(2, 20, "2Gi", "8Gi", "16Gi", 4, 8)
    assert load_limits().max_memory_limit_bytes == 16 * 1024**3


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_partial_limits_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, "limits.yaml", {"max_number_of_workers": 50, "max_memory_limit": "64Gi"})
    limits = load_limits(path)
    assert limits.max_number_of_workers == 50 and limits.max_memory_limit == "64Gi"
    assert limits.default_number_of_workers == 2 and limits.max_single_worker_memory == "8Gi"
    assert load_limits(str(path)) == limits


def test_comment_only_limits_file_keeps_defaults(tmp_path: Path) -> None:
    assert load_limits(write(tmp_path, "limits.yaml", "# nothing yet\n")) == load_limits()


def test_tighter_limits_turn_a_valid_spec_invalid(tmp_path: Path) -> None:
    document = spec(**{f"{DSK}__number_of_workers": 4, f"{DSK}__single_worker_memory": "2Gi"})
    assert check(document, load_limits())[0] is not None
    tight = load_limits(
        write(tmp_path, "l.yaml", {"max_number_of_workers": 3, "max_memory_limit": "4Gi"})
    )
    workflow, problems = check(document, tight)
    assert workflow is None
    messages = {p.path: p.message for p in problems}
    assert "maximum of 3 (max_number_of_workers)" in messages[f"{DASK}.number_of_workers"]
    document = spec(**{f"{DSK}__number_of_workers": 3, f"{DSK}__single_worker_memory": "2Gi"})
    _, problems = check(document, tight)
    assert [(p.path, "4Gi (max_memory_limit)" in p.message) for p in problems] == [(DASK, True)]


BAD_LIMITS = [
    ("unknown-key", {"max_workers": 3}, {"max_workers"}, "max_number_of_workers"),
    ("string-for-int", {"max_number_of_workers": "ten"}, {"max_number_of_workers"}, "whole number"),
    ("bool-for-int", {"max_single_worker_threads": True}, {"max_single_worker_threads"}, "true"),
    ("memory-pattern", {"max_memory_limit": "16GB"}, {"max_memory_limit"}, "not a memory size"),
    ("memory-number", {"max_single_worker_memory": 8}, {"max_single_worker_memory"}, "memory"),
    ("zero", {"max_number_of_workers": 0}, {"max_number_of_workers"}, "at least 1"),
    ("negative", {"default_single_worker_threads": -1}, {"default_single_worker_threads"}, "1"),
    (
        "default-above-max",  # 30 x 2Gi is also above max_memory_limit
        {"default_number_of_workers": 30},
        {"default_number_of_workers", "max_memory_limit"},
        "max_number_of_workers (20)",
    ),
    (
        "default-memory-above-max",
        {"default_single_worker_memory": "16Gi", "max_memory_limit": "64Gi"},
        {"default_single_worker_memory"},
        "max_single_worker_memory (8Gi)",
    ),
    ("defaults-exceed-total", {"max_memory_limit": "3Gi"}, {"max_memory_limit"}, "4Gi"),
    ("several", {"bogus": 1, "max_number_of_workers": -2}, {"bogus", "max_number_of_workers"}, ""),
    ("not-mapping", "- 1\n- 2\n", {""}, "not a mapping"),
    ("bad-yaml", "max_number_of_workers: [1\n", {""}, "line 2"),
    ("duplicate-key", "max_number_of_workers: 1\nmax_number_of_workers: 2\n", {""}, "duplicate"),
]


@pytest.mark.parametrize(
    ("content", "paths", "fragment"), [c[1:] for c in BAD_LIMITS], ids=[c[0] for c in BAD_LIMITS]
)
def test_bad_limits_file(tmp_path: Path, content: Any, paths: set[str], fragment: str) -> None:
    path = write(tmp_path, "limits.yaml", content)
    with pytest.raises(InputError) as caught:
        load_limits(path)
    assert caught.value.source == str(path)
    assert {p.path for p in caught.value.problems} == paths
    assert fragment in " ".join(p.message for p in caught.value.problems)
    for line in caught.value.lines():
        assert line.startswith(f"error: {path}: ") and "\n" not in line


def test_missing_limits_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_limits(tmp_path / "nope.yaml")


# -- load_workflow -------------------------------------------------------------------------------


def test_load_workflow_returns_warnings_and_path(tmp_path: Path, limits: Limits) -> None:
    path = write(tmp_path, "reana.yaml", spec(extra=1))
    workflow, warnings = load_workflow(path, limits)
    assert workflow.path == path
    assert [(w.path, w.severity) for w in warnings] == [("extra", "warning")]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("workflow:\n  type: serial\n   specification: x\n", "line 3, column"),
        ("workflow: [unclosed\n", "not valid YAML"),
        ("workflow:\n\ttype: serial\n", "line 2, column 1"),
        ("- a\n- b\n", "a list, not a mapping"),
        ("just a string\n", "a string, not a mapping"),
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("workflow: {}\nworkflow: {}\n", "duplicate key 'workflow'"),
    ],
)
def test_load_workflow_rejects_unreadable_documents(
    tmp_path: Path, limits: Limits, content: str, fragment: str
) -> None:
    path = write(tmp_path, "reana.yaml", content)
    with pytest.raises(InputError) as caught:
        load_workflow(path, limits)
    lines = caught.value.lines()
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"error: {path}: ") and fragment in lines[0]


def test_load_workflow_missing_file(tmp_path: Path, limits: Limits) -> None:
    with pytest.raises(InputError) as caught:
        load_workflow(tmp_path / "reana.yaml", limits)
    assert caught.value.lines() == [
        f"error: {tmp_path / 'reana.yaml'}: file not found; check the path"
    ]


def test_load_workflow_directory(tmp_path: Path, limits: Limits) -> None:
    with pytest.raises(InputError, match="directory"):
        load_workflow(tmp_path, limits)


def test_load_workflow_reports_every_error(tmp_path: Path, limits: Limits) -> None:
    document = spec(**{f"{DSK}__number_of_workers": 99, f"{DSK}__single_worker_memory": "9Gi"})
    with pytest.raises(InputError) as caught:
        load_workflow(write(tmp_path, "reana.yaml", document), limits)
    assert {p.path for p in caught.value.problems} == {
        f"{DASK}.number_of_workers",
        f"{DASK}.single_worker_memory",
    }


# -- the CLI, end to end --------------------------------------------------------------------------


def validate(*args: Any) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "daskstep", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def base_inputs(folder: Path) -> None:
    """The files and folders validate_cases.BASE declares, beside its reana.yaml."""
    (folder / "data").mkdir(exist_ok=True)
    (folder / "analysis.py").write_text("print(1)\n")


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_valid(tmp_path: Path) -> None:
    base_inputs(tmp_path)
    result = validate(write(tmp_path, "reana.yaml", spec()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert_no_traceback(result)


def test_cli_warnings_keep_exit_zero(tmp_path: Path) -> None:
    base_inputs(tmp_path)
    path = write(tmp_path, "reana.yaml", spec(extra=1, **{f"{DSK}__gpus": 1}))
    result = validate(path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"warning: {path}: ") for line in lines)
    assert_no_traceback(result)


def test_cli_invalid_prints_one_line_per_problem(tmp_path: Path, limits: Limits) -> None:
    document = spec(
        **{
            f"{DSK}__number_of_workers": 30,
            f"{DSK}__single_worker_memory": "8GB",
            f"{ST0}__commands": "python analysis.py",
        }
    )
    expected = [p for p in check(document, limits)[1] if p.severity == "error"]
    assert len(expected) == 3
    path = write(tmp_path, "reana.yaml", document)
    result = validate(path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [f"error: {path}: {p}" for p in expected]
    assert any("max_number_of_workers" in line for line in lines)
    assert_no_traceback(result)


def test_cli_shows_warnings_next_to_errors(tmp_path: Path) -> None:
    document = spec(**{f"{DSK}__number_of_workers": 0, f"{DSK}__single_worker_thread": 2})
    path = write(tmp_path, "reana.yaml", document)
    result = validate(path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"warning: {path}: workflow.resources.dask.single_worker_thread")
    assert "single_worker_threads" in lines[0]
    assert lines[1].startswith(f"error: {path}: workflow.resources.dask.number_of_workers")
    assert_no_traceback(result)


def test_cli_tighter_limits_file(tmp_path: Path) -> None:
    base_inputs(tmp_path)
    reana = write(tmp_path, "reana.yaml", spec(**{f"{DSK}__number_of_workers": 4}))
    assert validate(reana).returncode == 0
    limits = write(tmp_path, "limits.yaml", {"max_number_of_workers": 3})
    result = validate(reana, "--limits", limits)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "max_number_of_workers" in lines[0]
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("reana", "limits", "count"),
    [
        ("workflow:\n  type: serial\n   x: 1\n", None, 1),
        ("- 1\n", None, 1),
        (None, None, 1),
        ("ok", "max_number_of_workers: 0\nbogus: 1\n", 2),
        ("ok", "[1\n", 1),
    ],
    ids=["bad-yaml", "not-mapping", "missing-file", "bad-limits", "unparsable-limits"],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, reana: str | None, limits: str | None, count: int
) -> None:
    path = tmp_path / "missing.yaml"
    if reana == "ok":
        path = write(tmp_path, "reana.yaml", spec())
    elif reana is not None:
        path = write(tmp_path, "reana.yaml", reana)
    args: list[Any] = [path]
    if limits is not None:
        args += ["--limits", write(tmp_path, "limits.yaml", limits)]
    result = validate(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == count and all(line.startswith("error:") for line in lines), lines
    assert_no_traceback(result)


# -- validate and run agree on what is missing on disk (issue 19) ---------------------------------
def _agreeing_case(folder: Path, case: str) -> Path:
    """A reana.yaml whose only problem is one run's input stage finds; nothing else is wrong."""
    serial = {
        "type": "serial",
        "specification": {"steps": [{"name": "one", "commands": ["true"]}]},
    }
    documents: dict[str, dict[str, Any]] = {
        "missing input file": {"inputs": {"files": ["missing.py"]}, "workflow": serial},
        "missing input folder": {"inputs": {"directories": ["data"]}, "workflow": serial},
        "two missing inputs": {
            "inputs": {"files": ["a.py", "b.py"], "directories": ["data"]},
            "workflow": serial,
        },
        "output escaping the workspace": {"outputs": {"files": ["../out.png"]}, "workflow": serial},
        "cwl workflow file missing": {"workflow": {"type": "cwl", "file": "main.cwl"}},
        "snakemake config file missing": {
            "inputs": {"parameters": {"input": "config.yaml"}},
            "workflow": {"type": "snakemake", "file": "Snakefile"},
        },
    }
    if case == "snakemake config file missing":
        write(folder, "Snakefile", "rule all:\n    shell: 'true'\n")
    return write(folder, "reana.yaml", documents[case])


AGREEING = [
    ("missing input file", ["inputs.files[0]: 'missing.py' does not exist in"]),
    ("missing input folder", ["inputs.directories[0]: 'data' does not exist in"]),
    ("two missing inputs", ["inputs.files[0]", "inputs.files[1]", "inputs.directories[0]"]),
    ("output escaping the workspace", ["outputs.files[0]: '../out.png' is outside the workspace"]),
    ("cwl workflow file missing", ["workflow.file: 'main.cwl' is not a file in"]),
    ("snakemake config file missing", ["inputs.parameters.input: 'config.yaml' is not a file"]),
]


@pytest.mark.parametrize(("case", "fragments"), AGREEING, ids=[c for c, _ in AGREEING])
def test_validate_reports_what_runs_input_stage_refuses(
    tmp_path: Path, case: str, fragments: list[str]
) -> None:
    """`validate` said `valid` for `inputs.files: [missing.py]` while `run` refused it."""
    path = _agreeing_case(tmp_path, case)
    checked = validate(path)
    ran = subprocess.run(
        [sys.executable, "-m", "daskstep", "run", str(path), "--secrets", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2, ran.stderr
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "valid" not in checked.stdout
    errors = [line for line in checked.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(fragments) == len(checked.stderr.splitlines())
    for line, fragment in zip(errors, fragments, strict=True):
        assert line.startswith(f"error: {path}: ") and fragment in line and "; " in line
    assert_no_traceback(checked)
    assert not (tmp_path / ".daskstep").exists()  # run started nothing


def test_validate_finds_inputs_beside_the_reana_yaml_not_in_the_current_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "analysis"
    (folder / "data").mkdir(parents=True)
    write(folder, "analysis.py", "print(1)\n")
    path = write(
        folder,
        "reana.yaml",
        {
            "inputs": {"files": ["analysis.py"], "directories": ["data"]},
            "workflow": {"type": "serial", "specification": {"steps": [{"commands": ["true"]}]}},
        },
    )
    result = validate(path)  # run from the repository: the inputs are not in the cwd
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: valid (no Dask cluster; 1 step)"


@pytest.mark.parametrize(
    ("workers", "threads", "steps", "says"),
    [
        (1, 1, 1, "valid (1 worker × 1Gi, 1 thread each; 1 step)"),
        (2, 3, 2, "valid (2 workers × 1Gi, 3 threads each; 2 steps)"),
    ],
)
def test_cli_valid_counts_in_words(
    tmp_path: Path, workers: int, threads: int, steps: int, says: str
) -> None:
    """It said "1 steps"."""
    dask = {"image": IMAGE, "single_worker_memory": "1Gi"}
    dask |= {"number_of_workers": workers, "single_worker_threads": threads}
    document = {
        "workflow": {
            "type": "serial",
            "resources": {"dask": dask},
            "specification": {"steps": [{"commands": ["true"]}] * steps},
        }
    }
    result = validate(write(tmp_path, "reana.yaml", document))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f": {says}")
