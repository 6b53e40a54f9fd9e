"""The daskstep image (the controller, the sidecars and the step entrypoint), built from source.

It is built in two layers of work: the environment with daskstep's dependencies (`deps.Dockerfile`,
about a minute of pip and a 400 MB copy), tagged `daskstep/deps:PY-HASH` by what went into it,
and daskstep itself on top (`Dockerfile`, seconds). A change to daskstep's code rebuilds only the
second; a new dependency, base image or Python makes a new deps image and untags the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from daskstep.docker.images import (
    DEFAULT_PYTHON,
    ImageError,
    docker_build,
    docker_client,
    download_wheels,
    image_id,
    python_of,
    run_python,
)

IMAGE_EXTRA = "kubernetes"  # the image's sidecars follow pods (the Kubernetes log source)
DEPS_REPOSITORY = "daskstep/deps"
DEPS_OF = "org.daskstep.deps-of"  # the label naming the base a deps image was built on


def _project() -> Path:
    """The checkout daskstep runs from: the daskstep image is built from source."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "Dockerfile").is_file():
        raise ImageError(f"{root} is not a daskstep checkout; build the image from one")
    return root


def _requirements() -> list[str]:
    """daskstep's own dependencies and the image's extra's, not the others (tests, ...)."""
    from importlib.metadata import requires

    wanted = []
    for requirement in requires("daskstep") or []:
        spec, _, marker = requirement.partition(";")
        if not marker.strip() or f'extra == "{IMAGE_EXTRA}"' in marker:
            wanted.append(spec.strip())
    return wanted


def deps_tag(python: str, base_id: str, recipe: str, wheels: list[str]) -> str:
    """Named by everything that goes into it: a wheel's name carries its version and tags."""
    digest = hashlib.sha256()
    for part in (base_id, recipe, *sorted(wheels)):
        digest.update(part.encode() + b"\0")
    return f"{DEPS_REPOSITORY}:py{python}-{digest.hexdigest()[:12]}"


def _deps_image(client: Any, root: Path, base: str, python: str, log: Any) -> str:
    """The deps image for `base`: the one already here, or a new one."""
    with tempfile.TemporaryDirectory(prefix="daskstep-deps-") as tmp:
        context = Path(tmp)
        shutil.copy(root / "deps.Dockerfile", context / "Dockerfile")
        wheels = context / "wheels"
        log(f"daskstep: downloading daskstep's dependencies for Python {python}")
        download_wheels(wheels, python, _requirements())
        (wheels / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
        base_id = image_id(client, base) or base
        recipe = (root / "deps.Dockerfile").read_text()
        tag = deps_tag(python, base_id, recipe, [w.name for w in wheels.glob("*.whl")])
        if image_id(client, tag):
            log(f"daskstep: reusing {tag}")
            return tag
        log(f"daskstep: building {tag} from {base}")
        docker_build(client, context, tag, {"BASE_IMAGE": base}, log, labels={DEPS_OF: base_id})
    _untag_older(client, tag, base_id)
    return tag


def _untag_older(client: Any, tag: str, base_id: str) -> None:
    """The deps images this one replaces (same base): a daskstep image built on one keeps its
    layers; nothing else does."""
    for row in client.api.images(filters={"label": f"{DEPS_OF}={base_id}"}):
        for old in row.get("RepoTags") or []:
            if old.startswith(f"{DEPS_REPOSITORY}:") and old != tag:
                with contextlib.suppress(Exception):
                    client.api.remove_image(old, noprune=False)


def build_daskstep(tag: str, base: str | None = None, log: Any = print) -> dict[str, Any]:
    """The daskstep image from the top-level Dockerfile; what `daskstep --version` says in it."""
    root = _project()
    client = docker_client()
    base = base or f"python:{DEFAULT_PYTHON}-slim"
    python = python_of(client, base, None)
    deps = _deps_image(client, root, base, python, log)
    with tempfile.TemporaryDirectory(prefix="daskstep-image-") as tmp:
        context = Path(tmp)
        shutil.copy(root / "Dockerfile", context / "Dockerfile")
        shutil.copytree(root / "images", context / "images")
        log("daskstep: building the daskstep wheel")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
             str(context / "wheels"), str(root)],
            capture_output=True, text=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},  # same sources, same bytes
        )  # fmt: skip
        if done.returncode != 0:
            raise ImageError(f"cannot build the daskstep wheel: {done.stderr.strip()[-300:]}")
        log(f"daskstep: building {tag} on {deps}")
        docker_build(client, context, tag, {"DEPS_IMAGE": deps}, log)
    version = run_python(
        client, tag, "import subprocess; subprocess.run(['daskstep', '--version'])"
    )
    return {"image": tag, "version": version.strip()}
