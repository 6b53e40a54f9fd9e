"""Per-analysis Dask images: build one from images/Dockerfile for a given Dask version, and read
which Python, Dask and serialisation libraries an image holds.

The wheels are downloaded on the host, for the base image's Python and machine, so the build
itself needs no network (a machine that cannot pull or reach PyPI from a build still builds) and
no compiler (`--only-binary`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from daskstep.errors import DaskstepError, InputError, Problem, described

DEFAULT_PYTHON = "3.12"
PACKAGES = ("dask", "distributed", "msgpack", "cloudpickle")
PROBE = (
    f"PACKAGES = {PACKAGES!r}\n"
    + r"""
import json, platform, shutil
out = {"python": platform.python_version(), "dask_cli": shutil.which("dask") is not None}
for name in PACKAGES:
    try:
        from importlib.metadata import version
        out[name] = version(name)
    except Exception:
        out[name] = None
print(json.dumps(out))
"""
)
# The wheels glibc-based images can take; older bases than manylinux2014 are not supported.
PLATFORMS = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "linux")
VERSION_PATTERN = re.compile(r"^\d+(\.\d+){1,2}([a-z]+\d*)?\Z")


class ImageError(DaskstepError):
    exit_code = 69  # the engine or the package index is unavailable, or the build failed


class UnusableImage(ImageError):
    """An image the user named that cannot serve (not here: runs never pull; no python3 in
    it): bad input, one line, exit 2."""

    exit_code = 2


BUILD_STAGE_LABEL = "org.daskstep.stage"  # images/Dockerfile's stages: removed after a build
INSPECT = "inspect"  # the daskstep.component of the throwaway containers that read an image


def recipes() -> Path:
    """images/: beside the package in a checkout, or where the daskstep image puts it."""
    for folder in (
        os.environ.get("DASKSTEP_IMAGES"),
        Path(__file__).resolve().parents[2] / "images",
    ):
        if folder and (Path(folder) / "Dockerfile").is_file():
            return Path(folder)
    raise ImageError("images/Dockerfile not found; set DASKSTEP_IMAGES to the images folder")


def docker_client() -> Any:
    """The engine named by DOCKER_HOST (or the default socket); one line when it is not there."""
    from daskstep.extras import require_extra

    require_extra("docker", "docker", "talking to the Docker engine")
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # the SDK raises several kinds for "nobody answers"
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise ImageError(
            f"cannot reach the Docker engine at {where}: {os_reason(e)}; "
            "start it or set DOCKER_HOST"
        ) from None
    return client


def os_reason(error: BaseException) -> str:
    """What the system said, in words ("No such file or directory", "Connection refused"),
    from deep in the chain the SDK wraps it in (requests, urllib3: tuples of exceptions)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        todo += [a for a in e.args if isinstance(a, BaseException)]
        todo += [
            a
            for arg in e.args
            if isinstance(arg, tuple)
            for a in arg
            if isinstance(a, BaseException)
        ]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    found = re.search(r"\[Errno \d+\] ([^'\")]+)", str(error))
    return found.group(1) if found else " ".join(str(error).split())[:160]


def run_python(client: Any, image: str, code: str, field: str = "") -> str:
    """`python3 -c code` in a throwaway container of a local image (never pulled). The
    container carries daskstep's labels, so that `daskstep gc` finds it if we die meanwhile,
    and is removed whatever happens."""
    import docker

    from daskstep.docker.containers import run_labels
    from daskstep.record import new_run_id

    local_image(client, image, field)
    where = f"{field}: " if field else ""
    labels = run_labels(new_run_id(), INSPECT)
    container = client.containers.create(
        image, ["python3", "-c", code], network_mode="none", labels=labels
    )
    try:
        try:
            container.start()
        except docker.errors.APIError as e:
            said = described(e)
            if '"python3"' in said and ("not found" in said or "no such file" in said):
                raise UnusableImage(
                    f"{where}{image} has no python3; use an image with Python 3 on its PATH, "
                    "which daskstep needs to read its Dask versions and to run the step "
                    "wrapper (daskstep images build makes one)"
                ) from None
            raise ImageError(f"{where}{image}: the engine cannot start python3: {said}") from None
        code = int(container.wait().get("StatusCode", 1))
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if code != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").split("\n")
            last = next((ln.strip() for ln in reversed(err) if ln.strip()), f"exit code {code}")
            raise UnusableImage(
                f"{where}{image}: its python3 failed ({last}); daskstep needs Python 3.9 or "
                "newer in the image"
            )
    finally:
        with contextlib.suppress(Exception):  # gone already
            container.remove(force=True, v=True)
    return out


def local_image(client: Any, image: str, field: str = "") -> str:
    """`image`, when the engine has it: runs never pull (and cannot, on a closed network)."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        where = f"{field}: " if field else ""
        raise UnusableImage(
            f"{where}image {image} is not here; pull it (docker pull {image}) or build it "
            "(daskstep images build)"
        ) from None
    return image


COMPATIBLE = ("python", "distributed", "msgpack", "cloudpickle")  # what breaks Dask's wire


def _line(version: str | None, key: str) -> str:
    if version and key == "python":
        return ".".join(version.split(".")[:2])
    return version or "none"


def mismatches(step: dict[str, Any], cluster: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(package, step's, cluster's) where a step's Dask could not talk to the cluster's:
    Python by major.minor, the rest exactly. None for a step image without distributed: it
    does not talk to the cluster in Dask's words (its entrypoint counts the workers over the
    scheduler's HTTP), so there is nothing to compare."""
    if not step.get("distributed"):
        return []
    out = []
    for key in COMPATIBLE:
        mine, theirs = _line(step.get(key), key), _line(cluster.get(key), key)
        if mine != theirs:
            out.append((key, mine, theirs))
    return out


def mismatch_problem(field: str, image: str, cluster: str, m: tuple[str, str, str]) -> Problem:
    key, mine, theirs = m
    return Problem(
        field,
        f"{image} has {key} {mine} but the cluster image {cluster} has {theirs}; use the same "
        f"{key} in both (daskstep images build), or run with --allow-version-mismatch",
    )


def no_dask_cli(image: str) -> Problem:
    return Problem(
        "workflow.resources.dask.image",
        f"{image} has no `dask` command to start the scheduler and workers; build it with "
        "daskstep images build",
    )


def inspect(client: Any, image: str, field: str = "") -> dict[str, Any]:
    """Python, dask, distributed, msgpack and cloudpickle versions, and whether `dask` is there."""
    lines = run_python(client, image, PROBE, field).strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def python_of(client: Any, base: str, python: str | None) -> str:
    if python:
        return python
    match = re.match(r"^(?:.*/)?python:(\d+\.\d+)", base)
    if match:
        return match.group(1)
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    return run_python(client, base, code, "--base").strip().splitlines()[-1]


def download_wheels(dest: Path, python: str, requirements: list[str]) -> None:
    """Wheels for `python` on this machine's architecture, through the host's pip settings."""
    machine = platform.machine()
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest)]
    cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in PLATFORMS:
        cmd += ["--platform", f"{tag}_{machine}"]
    done = subprocess.run(cmd + requirements, capture_output=True, text=True)
    if done.returncode != 0:
        last = [ln for ln in done.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        reason = last[-1] if last else f"pip exited {done.returncode}"
        raise ImageError(f"cannot download wheels of {' '.join(requirements)}: {reason}")


def build(
    dask: str,
    tag: str,
    base: str | None = None,
    python: str | None = None,
    packages: tuple[str, ...] = (),
    log: Any = print,
) -> dict[str, Any]:
    """Build the image and return what `inspect` finds in it."""
    problems = []
    if not VERSION_PATTERN.match(dask):
        problems.append(Problem("--dask", f"{dask!r} is not a version; write e.g. 2023.3.2"))
    if python is not None and not re.fullmatch(r"3\.\d+", python):
        problems.append(Problem("--python", f"{python!r} is not X.Y; write e.g. 3.9"))
    if problems:
        raise InputError(problems)
    client = docker_client()
    python = python_of(client, base or f"python:{python or DEFAULT_PYTHON}-slim", python)
    base = base or f"python:{python}-slim"
    with tempfile.TemporaryDirectory(prefix="daskstep-image-") as tmp:
        context = Path(tmp)
        shutil.copy(recipes() / "Dockerfile", context / "Dockerfile")
        wanted = [f"dask=={dask}", f"distributed=={dask}", *packages]
        log(f"daskstep: downloading wheels for Python {python}: {' '.join(wanted)}")
        download_wheels(context / "wheels", python, wanted)
        args = {"BASE_IMAGE": base, "PYTHON": python, "DASK_VERSION": dask}
        args["PACKAGES"] = " ".join(packages)
        log(f"daskstep: building {tag} from {base}")
        docker_build(client, context, tag, args, log)
    return inspect(client, tag)


def docker_build(
    client: Any,
    context: Path,
    tag: str,
    args: dict[str, str],
    log: Any,
    dockerfile: str = "Dockerfile",
    labels: dict[str, str] | None = None,
) -> None:
    """Through the SDK's low-level API, so the build's own lines show as they come."""
    replaced = image_id(client, tag)
    made: list[str] = []  # what this build's steps committed (" ---> 1a2b3c4d5e6f")
    stream = client.api.build(
        path=str(context), dockerfile=dockerfile, tag=tag, buildargs=args, labels=labels,
        network_mode="host", rm=True, forcerm=True, pull=False, decode=True,
    )  # fmt: skip
    try:
        for chunk in stream:
            if "error" in chunk:
                raise ImageError(f"building {tag} failed: {chunk['error'].strip()}")
            line = (chunk.get("stream") or "").rstrip()
            if committed := re.fullmatch(r" ---> ([0-9a-f]{12,64})", line):
                made.append(committed.group(1))
            if line.startswith("Step "):
                log(f"  {line}")
    finally:
        _remove_leftovers(client, made, replaced, tag)


def image_id(client: Any, tag: str) -> str | None:
    import docker

    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None


def _remove_leftovers(client: Any, made: list[str], replaced: str | None, tag: str) -> None:
    """What a build leaves dangling, whether it worked or not: its build stage (the wheels and a
    second copy of the environment, about 200 MB that nothing uses; the Dockerfiles label it),
    and the image the tag named before, when the build replaced it."""
    dangling = client.api.images(filters={"dangling": True})
    ours = []
    for row in dangling:
        found = row["Id"]
        short = found.split(":")[-1]
        stage = BUILD_STAGE_LABEL in (row.get("Labels") or {})
        if (stage and any(short.startswith(m) for m in made)) or (
            found == replaced and image_id(client, tag) != replaced
        ):
            ours.append(found)
    for found in ours:
        with contextlib.suppress(Exception):  # in use (a container of it, another build)
            client.api.remove_image(found, noprune=False)
