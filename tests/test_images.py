"""Per-analysis Dask images, built with `daskstep images build` on a real engine, and read back
with `daskstep images inspect`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from dockerd import BASES, OLD_DASK, Engine, dangling_from, dask_image, derived_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def daskstep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daskstep", *args], capture_output=True, text=True, timeout=900
    )


def inspect(image: str) -> dict:
    done = daskstep("images", "inspect", image, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_old_dask_on_python_3_9(docker_engine: Engine) -> None:
    found = inspect(dask_image(docker_engine, OLD_DASK, "bullseye"))
    assert found["python"].startswith("3.9.")
    assert found["dask"] == found["distributed"] == OLD_DASK
    assert found["msgpack"] and found["cloudpickle"] and found["dask_cli"] is True


def test_the_newest_dask_on_bookworm(docker_engine: Engine) -> None:
    newest = version("distributed")
    found = inspect(dask_image(docker_engine, newest, "bookworm"))
    assert found["python"].startswith("3.11.")
    assert found["distributed"] == newest and found["dask_cli"] is True


def test_the_table_names_every_version(docker_engine: Engine) -> None:
    tag = dask_image(docker_engine, OLD_DASK, "bullseye")
    done = daskstep("images", "inspect", tag)
    assert done.returncode == 0, done.stderr
    rows = {line[:12].strip(): line[12:].strip() for line in done.stdout.splitlines()}
    assert rows["image"] == tag and rows["distributed"] == OLD_DASK
    assert rows["python"].startswith("3.9.") and rows["dask CLI"] == "yes"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--dask", "latest", "--tag", "x"], 2, "error: --dask: 'latest' is not a version"),
        (["--dask", "2024.1.1", "--python", "3", "--tag", "x"], 2, "error: --python: '3'"),
        (["--dask", "2024.1.1", "--base", "no/none:1", "--tag", "x"], 2, "error: --base: image"),
    ],
)
def test_bad_builds_are_one_line(docker_engine: Engine, args: list[str], code: int, words: str):
    done = daskstep("images", "build", *args)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(words) and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def build_base(docker_engine: Engine) -> str:
    """A base only these tests build on (bookworm's, one empty layer on top), so that what
    other builds on the engine leave is not counted."""
    tag = derived_image(docker_engine, "daskstep-test/build-base:1", BASES["bookworm"], "true")
    for image in dangling_from(docker_engine, tag):  # what an earlier daskstep left
        docker_engine.client.api.remove_image(image)
    return tag


def test_a_build_leaves_no_dangling_image(docker_engine: Engine, build_base: str) -> None:
    """Not its build stage: the wheels and a second environment, about 200 MB."""
    done = daskstep("images", "build", "--dask", version("distributed"), "--base", build_base,
                    "--tag", "daskstep-test/built:1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dangling_from(docker_engine, build_base) == set()


def test_a_failed_build_leaves_no_dangling_image(docker_engine: Engine, build_base: str) -> None:
    no_venv = derived_image(docker_engine, "daskstep-test/no-venv:1", build_base,
                            "rm -r /usr/lib/python3.11/venv")  # fmt: skip
    done = daskstep("images", "build", "--dask", version("distributed"), "--base", no_venv,
                    "--tag", "daskstep-test/never:1")  # fmt: skip
    assert done.returncode == 69, done.stderr
    assert "error: building daskstep-test/never:1 failed" in done.stderr
    assert dangling_from(docker_engine, build_base) == set()


def test_the_daskstep_image_runs_the_cli_and_installs_the_entrypoint(
    docker_engine: Engine, build_base: str, tmp_path
) -> None:
    tag = "daskstep-test/daskstep:dev"
    done = daskstep("images", "build-daskstep", "--tag", tag, "--base", build_base)
    assert done.returncode == 0, done.stderr[-3000:]
    assert dangling_from(docker_engine, build_base) == set()  # no build stage left
    assert done.stdout.startswith("daskstep 0.")
    client = docker_engine.client
    helped = client.containers.run(tag, ["daskstep", "--help"], remove=True, network_mode="none")
    assert b"Run Dask clusters inside REANA workflows" in helped
    volume = {str(tmp_path): {"bind": "/shared", "mode": "rw"}}
    said = client.containers.run(
        tag, ["daskstep", "entrypoint", "install", "/shared"], remove=True, volumes=volume
    )
    assert said.strip() == b"/shared/entrypoint.pyz"
    pyz = tmp_path / "entrypoint.pyz"
    ran = subprocess.run(
        [sys.executable, str(pyz), "--", "sh", "-c", "echo from the zipapp"],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and "from the zipapp" in ran.stdout
    # a second build (daskstep changed, its dependencies not) reuses the environment's image
    again = daskstep("images", "build-daskstep", "--tag", f"{tag}-again", "--base", build_base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"^daskstep: reusing daskstep/deps:py3\.11-[0-9a-f]{12}$", again.stderr, re.M)
    assert dangling_from(docker_engine, build_base) == set()
