"""The Docker backend's checks before anything starts, with a fake engine: a worker's threads
against the engine's CPUs, each image's versions against the cluster's, and an engine that does
not answer. The same checks against the real engine are in test_docker_edges.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daskstep.docker import images
from daskstep.docker.preflight import checked_images, cpu_problem
from daskstep.errors import InputError, described
from daskstep.workflow.limits import load_limits
from daskstep.workflow.spec import check

OLD = {"python": "3.9.2", "dask": "2023.3.2", "distributed": "2023.3.2", "msgpack": "1.0.5",
       "cloudpickle": "2.2.1", "dask_cli": True}  # fmt: skip
NEW = {**OLD, "python": "3.11.2", "dask": "2024.8.0", "distributed": "2024.8.0"}
PLAIN = {"python": "3.11.2", "dask": None, "distributed": None, "msgpack": None,
         "cloudpickle": None, "dask_cli": False}  # fmt: skip


def test_more_threads_than_the_engine_has_cpus_is_one_line() -> None:
    problem = cpu_problem(4, 2)
    assert problem is not None
    assert str(problem) == (
        "workflow.resources.dask.single_worker_threads: 4 is more than the 2 CPUs the Docker "
        "engine has; ask for at most 2"
    )
    one = "than the 1 CPU the Docker engine has; ask for at most 1"
    assert str(cpu_problem(2, 1)).endswith(one)
    assert cpu_problem(2, 2) is None and cpu_problem(1, 8) is None


def test_a_step_without_distributed_is_no_mismatch() -> None:
    assert images.mismatches(PLAIN, OLD) == []
    assert images.mismatches(OLD, OLD) == []
    assert [m[0] for m in images.mismatches(NEW, OLD)] == ["python", "distributed"]


class FakeEngine:
    def __init__(self, cpus: int) -> None:
        self.cpus = cpus

    def info(self) -> dict:
        return {"NCPU": self.cpus}


def workflow(tmp_path: Path, steps: list[tuple[str, str]], threads: int = 1):
    document = {
        "workflow": {
            "type": "serial",
            "resources": {"dask": {"image": "old:1", "single_worker_threads": threads}},
            "specification": {
                "steps": [{"name": n, "environment": i, "commands": ["true"]} for n, i in steps]
            },
        }
    }
    wf, problems = check(document, load_limits(), tmp_path / "reana.yaml")
    assert wf is not None, problems
    return wf


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Images old:1 (the cluster's), new:1 (a newer Dask) and plain:1 (no Dask at all)."""
    fake = FakeEngine(cpus=2)
    found = {"old:1": OLD, "new:1": NEW, "plain:1": PLAIN}
    monkeypatch.setattr(images, "docker_client", lambda: fake)
    monkeypatch.setattr(images, "local_image", lambda client, image, field="": image)
    monkeypatch.setattr(images, "inspect", lambda client, image, field="": found[image])
    return fake


def test_steps_that_do_not_use_dask_pass_and_each_mismatch_is_its_own(
    engine: FakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = workflow(tmp_path, [("plain", "plain:1"), ("same", "old:1")])
    client, _ = checked_images(wf, allow_mismatch=False)
    assert client is engine and capsys.readouterr().err == ""

    wf = workflow(tmp_path, [("plain", "plain:1"), ("newer", "new:1")])
    with pytest.raises(InputError) as refused:
        checked_images(wf, allow_mismatch=False)
    assert [p.path for p in refused.value.problems] == [
        "workflow.specification.steps[1].environment"
    ] * 2  # python and distributed, for the one step that differs

    checked_images(wf, allow_mismatch=True)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all("steps[1].environment: step newer: new:1" in w
                                      for w in warnings)  # fmt: skip
    assert "distributed 2024.8.0, the cluster old:1 2023.3.2" in warnings[1]


def test_too_many_threads_are_refused_with_the_images_problems(
    engine: FakeEngine, tmp_path: Path
) -> None:
    wf = workflow(tmp_path, [("newer", "new:1")], threads=3)
    with pytest.raises(InputError) as refused:
        checked_images(wf, allow_mismatch=False)
    assert refused.value.problems[0].path == "workflow.resources.dask.single_worker_threads"
    assert "3 is more than the 2 CPUs" in str(refused.value.problems[0])


def test_the_engines_own_words_are_the_line() -> None:
    class APIError(Exception):
        explanation = "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"

    refused = APIError("400 Client Error for http+docker://localhost/v1.41/containers/create")
    assert described(refused) == APIError.explanation
    assert described(RuntimeError("two\nlines")) == "RuntimeError: two lines"


def test_an_engine_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    for host in (f"unix://{tmp_path}/no-such.sock", "tcp://127.0.0.1:9"):
        done = subprocess.run(
            [sys.executable, "-m", "daskstep", "images", "inspect", "some/image:1"],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_HOST": host},
            timeout=60,
        )
        assert done.returncode == 69, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"error: cannot reach the Docker engine at {host}: ")
        assert "Error(" not in done.stderr and "('" not in done.stderr, done.stderr  # no tuple
