"""Property: whatever bytes or YAML document a user hands to `validate` or `run`, the input stage
ends in exit 0 or exit 2 with `error:`/`warning:` lines, never a traceback.

`run` is driven through the real CLI in-process, with only `Run.execute` replaced by a fake, so
a valid document exercises every input check (inputs on disk, workspace, secrets) and starts
nothing.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import execute_returning
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from daskstep import cli
from daskstep.run import Run

KNOWN = [
    "version",
    "inputs",
    "files",
    "directories",
    "parameters",
    "workflow",
    "type",
    "resources",
    "dask",
    "image",
    "number_of_workers",
    "single_worker_memory",
    "single_worker_threads",
    "kerberos",
    "voms_proxy",
    "specification",
    "steps",
    "name",
    "environment",
    "commands",
    "outputs",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["serial", "cwl", "2Gi", "0Mi", "docker.io/a/b:1", "../x", "/etc", "$p"])
)
keys = st.sampled_from(KNOWN) | st.text(max_size=12) | st.integers(-3, 3)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything: deep fields get reached and broken."""
    return st.integers(0, 9).flatmap(lambda n: anything if n == 0 else valid)


dask = maybe(
    st.fixed_dictionaries(
        {"image": maybe(st.just("docker.io/library/python:3.11"))},
        optional={
            "number_of_workers": maybe(st.integers(1, 4) | st.integers(-2, 30)),
            "single_worker_memory": maybe(st.sampled_from(["1Gi", "512Mi", "1G", "9Gi", "0"])),
            "single_worker_threads": maybe(st.integers(1, 2) | st.integers(-1, 9)),
        },
    )
)
step = maybe(
    st.fixed_dictionaries(
        {"commands": maybe(st.lists(maybe(st.just("true")), min_size=1, max_size=3))},
        optional={"name": maybe(st.text(max_size=8)), "kerberos": maybe(st.booleans())},
    )
)
documents = st.one_of(
    anything,
    st.fixed_dictionaries(
        {
            "workflow": maybe(
                st.fixed_dictionaries(
                    {
                        "type": maybe(st.just("serial")),
                        "specification": maybe(
                            st.fixed_dictionaries(
                                {"steps": maybe(st.lists(step, min_size=1, max_size=3))}
                            )
                        ),
                    },
                    optional={
                        "resources": maybe(st.fixed_dictionaries({}, optional={"dask": dask}))
                    },
                )
            )
        },
        optional={
            "inputs": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "files": maybe(
                            st.lists(st.sampled_from(["a.py", "../b", "/c", "reana.yaml"]))
                        ),
                        "parameters": anything,
                    },
                )
            ),
            "outputs": maybe(st.fixed_dictionaries({}, optional={"files": st.lists(scalars)})),
        },
    ),
)


def _exit_code(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse
        return int(e.code or 0)


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("validate", "run"):
        argv = [command, str(path)]
        if command == "run":
            argv += ["--workspace", str(path.parent / "ws"), "--secrets", str(path.parent)]
        code = _exit_code(argv)
        out, err = capsys.readouterr()
        event(f"{command} exit {code}")  # --hypothesis-show-statistics: valid ones are reached
        assert code in (0, 2), (command, code, err)
        assert "Traceback" not in out + err
        lines = err.splitlines()
        assert all(ln.startswith(("error:", "warning:", "daskstep:")) for ln in lines), lines
        assert code == 0 or any(ln.startswith("error:") for ln in lines), err
        assert len(err) < 20_000


EXAMPLES = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def fake_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Run, "execute", execute_returning(0))


@EXAMPLES
@given(document=documents)
def test_any_yaml_document_gives_0_or_2(
    document: Any, capsys: pytest.CaptureFixture[str], fake_execute: None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reana.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        _check(path, capsys)


VALID = {
    "inputs": {"files": ["reana.yaml"], "parameters": {"n": 3}},
    "workflow": {
        "type": "serial",
        "resources": {
            "dask": {
                "image": "docker.io/library/python:3.11",
                "number_of_workers": 2,
                "single_worker_memory": "1Gi",
                "single_worker_threads": 1,
            }
        },
        "specification": {"steps": [{"name": "one", "commands": ["echo $n"]}]},
    },
    "outputs": {"files": ["out.txt"]},
}
FIELDS = [
    ("inputs",),
    ("inputs", "files"),
    ("inputs", "parameters"),
    ("workflow", "type"),
    ("workflow", "resources"),
    ("workflow", "resources", "dask"),
    ("workflow", "resources", "dask", "image"),
    ("workflow", "resources", "dask", "number_of_workers"),
    ("workflow", "resources", "dask", "single_worker_memory"),
    ("workflow", "resources", "dask", "single_worker_threads"),
    ("workflow", "resources", "kerberos"),
    ("workflow", "specification"),
    ("workflow", "specification", "steps"),
    ("outputs",),
    ("outputs", "files"),
]


@EXAMPLES
@given(field=st.sampled_from(FIELDS), value=anything)
def test_a_valid_document_with_one_field_replaced_gives_0_or_2(
    field: tuple[str, ...], value: Any, capsys: pytest.CaptureFixture[str], fake_execute: None
) -> None:
    document = copy.deepcopy(VALID)
    parent = document
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reana.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        _check(path, capsys)


@EXAMPLES
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_give_0_or_2(
    data: bytes, capsys: pytest.CaptureFixture[str], fake_execute: None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reana.yaml"
        path.write_bytes(data)
        _check(path, capsys)


@settings(EXAMPLES, max_examples=100)
@given(timeout=st.text(max_size=12))
def test_any_start_timeout_gives_a_clean_answer(
    timeout: str, capsys: pytest.CaptureFixture[str], fake_execute: None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reana.yaml"
        path.write_text("workflow: {type: serial, specification: {steps: [{commands: [true]}]}}\n")
        code = _exit_code(["run", str(path), f"--start-timeout={timeout}"])
        _out, err = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in err
        assert code == 0 or (err.count("\n") == 1 and err.startswith("error:")), err


# -- validate and run's input stage agree on what is on disk (issue 19) --------------------------
ON_DISK = {"a.py": "file", "data": "folder", "data/x.csv": "file", "Snakefile": "file"}
NAMES = st.sampled_from([*ON_DISK, "missing.py", "nodata", "data/missing.csv", "../up", "/abs"])
on_disk_documents = st.fixed_dictionaries(
    {
        "inputs": st.fixed_dictionaries(
            {},
            optional={
                "files": st.lists(NAMES, max_size=3),
                "directories": st.lists(NAMES, max_size=2),
                "parameters": st.fixed_dictionaries({}, optional={"input": NAMES}),
            },
        ),
        "workflow": st.one_of(
            st.just({"type": "serial", "specification": {"steps": [{"commands": ["true"]}]}}),
            st.fixed_dictionaries({"type": st.sampled_from(["cwl", "snakemake"]), "file": NAMES}),
        ),
    },
    optional={
        "outputs": st.fixed_dictionaries({}, optional={"files": st.lists(NAMES, max_size=2)})
    },
)


def _said(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = _exit_code(argv)
    _out, err = capsys.readouterr()
    return code, [ln for ln in err.splitlines() if ln.startswith(("error:", "warning:"))]


@EXAMPLES
@given(document=on_disk_documents)
def test_validate_and_runs_input_stage_agree_on_inputs(
    document: dict[str, Any], capsys: pytest.CaptureFixture[str], fake_execute: None
) -> None:
    """Whatever inputs, outputs and workflow files a document names, some there and some not,
    `validate` gives the same exit code and the same error lines as `run` (local backend)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "analysis"
        for name, kind in ON_DISK.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            if kind == "folder":
                (root / name).mkdir(exist_ok=True)
            else:
                (root / name).write_text("x\n")
        path = root / "reana.yaml"
        path.write_text(yaml.safe_dump(document))
        checked = _said(["validate", str(path)], capsys)
        ran = _said(["run", str(path), "--workspace", f"{folder}/ws", "--secrets", folder], capsys)
        event(f"exit {checked[0]}")
        assert checked == ran
        assert checked[0] in (0, 2)
