"""`pip install daskstep` is the local backend; a part whose extra is missing says which extra
to install, in one line, exit 2, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_workflow

from daskstep import cli, extras


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    """Make the named modules look uninstalled to daskstep's checks."""

    def hide(*modules: str) -> None:
        real = extras.find_spec
        monkeypatch.setattr(extras, "find_spec", lambda m: None if m in modules else real(m))

    return hide


@pytest.mark.parametrize(
    ("backend", "module", "extra", "what"),
    [
        ("docker", "docker", "docker", "the docker backend"),
        ("kubernetes", "dask_kubernetes", "kubernetes", "the kubernetes backend"),
        ("slurm", "dask_jobqueue", "batch", "slurm"),
        ("htcondor", "dask_jobqueue", "batch", "htcondor"),
    ],
)
def test_a_backend_without_its_extra_is_one_line(
    tmp_path: Path, capsys, without, backend: str, module: str, extra: str, what: str
) -> None:
    without(module)
    reana = write_workflow(tmp_path, [("one", ["true"])])
    assert cli.main(["run", str(reana), "--backend", backend]) == 2
    name = module.replace("_", "-")
    assert capsys.readouterr().err == (
        f"error: --backend: {what} needs {name}, which is not installed; "
        f"pip install 'daskstep[{extra}]'\n"
    )
    assert not (tmp_path / ".daskstep").exists()  # nothing started, nothing recorded


def test_render_and_images_without_their_extras(tmp_path: Path, capsys, without) -> None:
    without("dask_kubernetes", "docker")
    reana = write_workflow(tmp_path, [("one", ["true"])])
    assert cli.main(["render", str(reana)]) == 2
    assert "pip install 'daskstep[kubernetes]'" in capsys.readouterr().err
    assert cli.main(["images", "inspect", "some/image:1"]) == 2
    assert capsys.readouterr().err == (
        "error: docker: talking to the Docker engine needs docker, which is not installed; "
        "pip install 'daskstep[docker]'\n"
    )


def test_the_local_backend_needs_no_extra(tmp_path: Path, without, monkeypatch) -> None:
    from conftest import execute_returning

    from daskstep.run import Run

    without("docker", "kubernetes", "dask_kubernetes", "dask_jobqueue", "matplotlib")
    monkeypatch.setattr(Run, "execute", execute_returning(0))
    reana = write_workflow(tmp_path, [("one", ["true"])])
    assert cli.main(["run", str(reana)]) == 0


def test_the_report_without_matplotlib_is_the_page_alone(tmp_path: Path, without, capsys) -> None:
    from daskstep.report import write_report

    without("matplotlib")
    (tmp_path / "report.png").write_bytes(b"an older figure")
    html, png = write_report(tmp_path, {"status": "finished", "exit_code": 0}, [], None)
    assert "daskstep run report" in html.read_text() and not png.exists()
    assert "pip install 'daskstep[report]'" in capsys.readouterr().out
