"""The backend registry: a backend is one module with a `Kind` and one line in the registry.
A fake backend registered here runs a real workflow through `prepare_run` and the run loop,
and nothing else in daskstep had to know its name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import write_workflow

from daskstep.backends import get_backend
from daskstep.backends.base import ClusterBackend
from daskstep.backends.local import LocalBackend
from daskstep.backends.registry import KINDS, Kind, kind_of, names, register
from daskstep.cli import _load
from daskstep.engines.engine_step import engine_problems
from daskstep.errors import InputError
from daskstep.seams import StepLauncher
from daskstep.wiring import prepare_run


class RecordingCluster(LocalBackend):
    """The local cluster under another name, recording what the run asked of it."""

    name = "fake"
    calls: ClassVar[list[str]] = []

    def _start(self, spec: Any, run: Any) -> Any:
        self.calls.append(f"start {spec.workers} workers")
        return super()._start(spec, run)

    def stop(self) -> None:
        self.calls.append("stop")
        super().stop()


class FakeKind(Kind):
    name = "fake"
    checked: ClassVar[list[str]] = []

    def check(self) -> None:
        self.checked.append(self.workflow.path.name)

    def cluster(self, run_id: str, tls: Any, systems: dict[str, Any]) -> ClusterBackend:
        self.run_id = run_id
        return RecordingCluster(tls=tls)

    def step_launcher(
        self, cluster: ClusterBackend, record: Any, credentials: Any, here: StepLauncher
    ) -> StepLauncher:
        RecordingCluster.calls.append(f"launcher for {type(here).__name__}")
        return here


@pytest.fixture
def fake_kind() -> Iterator[type[Kind]]:
    register(FakeKind)
    RecordingCluster.calls.clear()
    FakeKind.checked.clear()
    try:
        yield FakeKind
    finally:
        KINDS.pop("fake", None)


def test_every_backend_of_the_cli_is_in_the_registry() -> None:
    assert names() == ["local", "docker", "kubernetes", "slurm", "htcondor"]
    for name in names():
        assert kind_of(name).name == name


def test_an_unknown_backend_is_one_problem_naming_the_known_ones() -> None:
    with pytest.raises(InputError) as refused:
        kind_of("nomad")
    [problem] = refused.value.problems
    assert problem.path == "--backend"
    assert "'nomad' is not a backend; use one of local, docker, kubernetes" in str(problem)


def test_a_bare_cluster_only_where_it_needs_no_workflow() -> None:
    assert get_backend("local").name == "local"
    with pytest.raises(InputError, match="slurm needs a workflow's settings"):
        get_backend("slurm")


@pytest.mark.integration
def test_a_registered_backend_runs_a_workflow(fake_kind: type[Kind], tmp_path: Path) -> None:
    spec = write_workflow(tmp_path, [("hello", ["echo hello from the fake backend"])], workers=2)
    workflow = _load(str(spec), None)
    run = prepare_run(workflow, backend="fake", workspace=tmp_path)
    assert run.execute() == 0
    assert FakeKind.checked == ["reana.yaml"]
    assert RecordingCluster.calls == [
        "launcher for LocalStepLauncher",
        "start 2 workers",
        "stop",
    ]
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert status["cluster"]["backend"] == "fake" and status["status"] == "finished"
    job = (tmp_path / ".daskstep" / "logs" / "job.log").read_text()
    assert "hello from the fake backend" in job


def test_engines_run_only_where_the_kind_says_so(fake_kind: type[Kind], tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text("rule all:\n    shell: 'true'\n")
    (tmp_path / "reana.yaml").write_text(
        "workflow:\n  type: snakemake\n  file: Snakefile\n"
        "  resources:\n    dask:\n      image: ghcr.io/dask/dask:2026.8.0\n"
    )
    workflow = _load(str(tmp_path / "reana.yaml"), None)
    problems = engine_problems(workflow, kind_of("fake"))
    assert any(p.path == "--backend" and "fake cannot run snakemake" in str(p) for p in problems)
    assert not [p for p in engine_problems(workflow, kind_of("local")) if p.path == "--backend"]
