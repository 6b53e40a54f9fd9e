"""Each kind of bad input to `daskstep run`, through the real command: exit 2, one `error:` line
naming the field and the fix, no traceback, and nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import daskstep, write_workflow

GOOD = [("one", ["touch ran"])]


def _inputs(kind: str, name: str):
    def make(folder: Path) -> list[str]:
        spec = write_workflow(folder, GOOD)
        spec.write_text(f"inputs:\n  {kind}: [{name!r}]\n" + spec.read_text())
        return [str(spec)]

    return make


def _spec(folder: Path) -> Path:
    return write_workflow(folder, GOOD)


CASES = {
    "missing input file": (_inputs("files", "nope.py"), "inputs.files[0]", "does not exist"),
    "missing input folder": (
        _inputs("directories", "data"),
        "inputs.directories[0]",
        "does not exist",
    ),
    "input leaves the workspace": (
        _inputs("files", "../../etc/passwd"),
        "inputs.files[0]",
        "outside the workspace",
    ),
    "absolute input": (_inputs("directories", "/etc"), "inputs.directories[0]", "without a"),
    "deeply nested YAML": (
        lambda f: [str(_write(f / "reana.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n"))],
        "nested deeper than",
        "fix the YAML",
    ),
    "negative start timeout": (
        lambda f: [str(_spec(f)), "--start-timeout", "-5"],
        "--start-timeout",
        "positive number of seconds",
    ),
    "workspace is a file": (
        lambda f: [str(_spec(f)), "--workspace", str(_write(f / "file", "x"))],
        "--workspace",
        "is a file, not a folder",
    ),
    "secrets folder missing": (
        lambda f: [str(_spec(f)), "--secrets", str(f / "no-such-folder")],
        "--secrets",
        "is not a folder",
    ),
    "a backend that does not exist yet": (
        lambda f: [str(_spec(f)), "--backend", "mesos"],
        "--backend",
        "choose from",
    ),
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exits_2_with_one_line_and_starts_nothing(tmp_path: Path, case: str) -> None:
    make, field, fix = CASES[case]
    run = daskstep("run", *make(tmp_path))
    out, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert field in lines[0] and fix in lines[0]
    assert "Traceback" not in out + err and len(err) < 400
    assert not (tmp_path / "ran").exists()
    assert not list(tmp_path.rglob(".daskstep")), "something was started"


def test_version() -> None:
    run = daskstep("--version")
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert out.startswith("daskstep 0.") and "distributed 20" in out


def test_help_offers_only_backends_that_exist() -> None:
    run = daskstep("run", "--help")
    out, _ = run.communicate(timeout=30)
    assert "{local,docker,kubernetes,slurm,htcondor}" in out
