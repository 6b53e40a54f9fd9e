"""The forms of `--source`: what each parses into, and the one line a bad one gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import daskstep

from sidecar.logs import SourceSpec, build_sources, parse_source


def test_file_source() -> None:
    spec = parse_source("worker=logs/workers/*.log")
    assert (spec.kind, spec.component) == ("file", "worker")
    assert spec.pattern == str(Path("logs/workers/*.log").absolute())


def test_docker_source_by_labels() -> None:
    spec = parse_source("docker:daskstep.run=r1,daskstep.component=worker")
    assert spec.kind == "docker"
    assert spec.labels == (("daskstep.run", "r1"), ("daskstep.component", "worker"))


def test_kubernetes_source_keeps_the_slash_of_the_label_key() -> None:
    spec = parse_source("kubernetes:analysis/dask.org/cluster-name=run-1")
    assert (spec.kind, spec.namespace, spec.selector) == (
        "kubernetes",
        "analysis",
        "dask.org/cluster-name=run-1",
    )


def test_selectors_of_one_namespace_share_one_kubernetes_source(monkeypatch) -> None:
    import sidecar.kubernetes as k8s

    monkeypatch.setattr(k8s, "_core_api", lambda: object())  # no cluster here: never called
    specs = [
        parse_source("kubernetes:ns/dask.org/cluster-name=c1"),
        parse_source("kubernetes:ns/job-name=step-1"),
        parse_source("kubernetes:other/app=x"),
        parse_source("job=/tmp/job.log"),
    ]
    sources = build_sources(specs)
    assert len(sources) == 3
    kube = [s for s in sources if s.key.startswith("kubernetes:")]
    assert sorted(s.key for s in kube) == [
        "kubernetes:ns/dask.org/cluster-name=c1|job-name=step-1",
        "kubernetes:other/app=x",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "job",
        "jobs=/x.log",
        "worker=",
        "docker:",
        "docker:daskstep.run",
        "docker:=x",
        "kubernetes:ns",
        "kubernetes:/app=x",
        "kubernetes:ns/ ",
    ],
)
def test_bad_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is none of the forms"):
        parse_source(text)


def test_a_bad_source_is_one_error_line_exit_2(tmp_path: Path) -> None:
    proc = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", "docker:")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert (
        err.startswith("error: --source: 'docker:' is none of the forms") and err.count("\n") == 1
    )


def test_source_spec_is_plain_data() -> None:
    assert SourceSpec("file", "job=/x", "job", "/x") == parse_source("job=/x")
