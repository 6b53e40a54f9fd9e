"""The Docker backend's edges on a real engine: what the engine would refuse is refused before
anything starts, in one line naming the field; a refusal it meets anyway fails the run, never
"finished"; nothing is left behind, not even the containers that read an image."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import daskstep
from dockerd import BASES, OLD_DASK, Engine, dask_image, derived_image
from test_docker_backend import workflow

from daskstep.cli import _load
from daskstep.wiring import prepare_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def all_containers(engine: Engine) -> list[str]:
    """Every container of the engine, running or not, labelled or not (`docker ps -a`)."""
    return sorted(row["Id"] for row in engine.client.api.containers(all=True))


@pytest.fixture(scope="module")
def old_image(docker_engine: Engine) -> str:
    return dask_image(docker_engine, OLD_DASK, "bullseye")


@pytest.fixture(scope="module")
def no_python(docker_engine: Engine) -> str:
    return derived_image(docker_engine, "daskstep-test/no-python:1", BASES["bookworm"],
                   "rm /usr/bin/python3*")  # fmt: skip


def error_lines(err: str) -> list[str]:
    lines = err.splitlines()
    assert "Traceback" not in err and not any(ln.startswith("daskstep: error") for ln in lines)
    return [ln for ln in lines if ln.startswith("error: ")]


def test_more_threads_than_the_engine_has_cpus_is_refused_before_anything_starts(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    cpus = docker_engine.client.info()["NCPU"]
    spec = workflow(tmp_path, old_image, [("s", old_image, ["true"])],
                    single_worker_threads=cpus + 2)  # fmt: skip
    before = all_containers(docker_engine)
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    assert error_lines(err) == [
        f"error: workflow.resources.dask.single_worker_threads: {cpus + 2} is more than the "
        f"{cpus} CPUs the Docker engine has; ask for at most {cpus}"
    ]
    assert not (tmp_path / ".daskstep" / "status.json").exists()
    assert all_containers(docker_engine) == before


def test_an_engine_refusing_the_cluster_fails_the_run_and_leaves_nothing(
    docker_engine: Engine, old_image: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The same refusal met past the checks (here: the checks passed, then the workflow asks
    for more): a failed run, 69, in the engine's words, with its report; never "finished"."""
    spec = workflow(tmp_path, old_image, [("s", old_image, ["true"])])
    wf = _load(str(spec), None)
    before = all_containers(docker_engine)
    run = prepare_run(wf, backend="docker", workspace=tmp_path)
    cpus = docker_engine.client.info()["NCPU"]
    assert wf.dask is not None
    run.workflow = dataclasses.replace(
        wf, dask=dataclasses.replace(wf.dask, single_worker_threads=cpus + 2)
    )
    assert run.execute() == 69
    doc = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert doc["status"] == "failed" and doc["exit_code"] == 69
    assert doc["message"].startswith("the Docker engine refused the cluster: Range of CPUs")
    assert (tmp_path / ".daskstep" / "report.html").is_file()
    assert error_lines(capfd.readouterr().err) == [f"error: {doc['message']}"]
    assert all_containers(docker_engine) == before


def test_an_image_without_python3_is_one_line_and_leaves_no_container(
    docker_engine: Engine, old_image: str, no_python: str, tmp_path: Path
) -> None:
    before = all_containers(docker_engine)
    step_lacks = workflow(tmp_path / "a", old_image, [("s", no_python, ["true"])])
    cluster_lacks = workflow(tmp_path / "b", no_python, [("s", old_image, ["true"])])
    for field, spec in (
        ("specification.steps[0].environment", step_lacks),
        ("resources.dask.image", cluster_lacks),
    ):
        run = daskstep("run", str(spec), "--backend", "docker")
        _out, err = run.communicate(timeout=120)
        assert run.returncode == 2, err
        lines = error_lines(err)
        assert len(lines) == 1 and lines[0].startswith(
            f"error: workflow.{field}: {no_python} has no python3; "
        ), err
        assert all_containers(docker_engine) == before, f"{field}: a container was left"

    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "images", "inspect", no_python],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == done.stderr.splitlines()
    assert done.stderr.startswith(f"error: {no_python} has no python3; use an image with")
    assert all_containers(docker_engine) == before


def test_a_missing_image_is_bad_input_for_inspect_too(docker_engine: Engine) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "images", "inspect", "nosuch/image:1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: image nosuch/image:1 is not here; pull it (docker pull nosuch/image:1) or "
        "build it (daskstep images build)\n"
    )


def test_a_step_that_does_not_use_dask_needs_no_distributed(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    plain = BASES["bookworm"]  # Python 3.11, no Dask at all
    spec = workflow(tmp_path, old_image, [("plain", plain, ["echo plain step"])],
                    number_of_workers=1)  # fmt: skip
    run = daskstep("run", str(spec), "--backend", "docker")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "plain step" in out and "warning: workflow" not in err

    newest = dask_image(docker_engine, version("distributed"), "bookworm")
    steps = [("plain", plain, ["echo plain"]), ("newer", newest, ["echo newer"])]
    spec = workflow(tmp_path / "mixed", old_image, steps, number_of_workers=1)
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    refused = error_lines(err)
    assert refused and all(
        ln.startswith("error: workflow.specification.steps[1].environment: ") for ln in refused
    ), err  # the step without Dask is not one of them
    run = daskstep("run", str(spec), "--backend", "docker", "--allow-version-mismatch")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    warned = [ln for ln in err.splitlines() if "warning: workflow" in ln]
    assert warned and all("steps[1].environment: step newer: " in ln for ln in warned), err
    assert any(f"distributed {version('distributed')}" in ln and OLD_DASK in ln for ln in warned)


def test_errors_met_while_running_start_with_error(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    spec = workflow(tmp_path, old_image, [("s", old_image, ["true"])])
    run = daskstep("run", str(spec), "--backend", "docker", "--start-timeout", "0.001")
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 75, err
    # how many registered by the first look depends on the machine's speed (1 was seen): the
    # line's form is the point, with a count below the 3 asked for
    [line] = error_lines(err)  # and no `daskstep: error:`
    assert re.fullmatch(r"error: only [0-2] of 3 workers registered within 0\.001 s", line), err
