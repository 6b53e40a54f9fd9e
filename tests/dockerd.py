"""A real Docker engine for the container tests: a private dockerd with no bridge and no
iptables rules (containers use `--network host` on loopback), its images cached under a fixed
`--data-root`, so a second session on the same machine builds nothing again.

Nothing can be pulled here, so the base images are made from Debian's own packages
(debootstrap, the machine's apt mirror read at run time) and imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(os.environ.get("DASKSTEP_DOCKER_ROOT", "/var/tmp/daskstep-docker"))
SOCKET = ROOT / "docker.sock"
BASES = {
    "bookworm": "daskstep-test/bookworm-python:latest",
    "bullseye": "daskstep-test/bullseye-python:latest",
}
OLD_DASK = "2023.3.2"  # on bullseye's Python 3.9


def docker_missing() -> str:
    """Why the engine cannot run here, or '' when it can."""
    for tool in ("dockerd", "docker", "debootstrap", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install docker.io debootstrap)"
    if os.geteuid() != 0:
        return "the Docker engine needs root"
    return ""


@dataclass
class Engine:
    host: str
    client: Any

    def image_exists(self, tag: str) -> bool:
        import docker

        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True


def _answers(host: str) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=host, timeout=5).ping()
    except Exception:
        return False
    return True


def _start_dockerd() -> subprocess.Popen:
    for sub in ("data", "exec"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    cmd = ["dockerd", "--host", f"unix://{SOCKET}", "--data-root", str(ROOT / "data")]
    cmd += ["--exec-root", str(ROOT / "exec"), "--pidfile", str(ROOT / "dockerd.pid")]
    cmd += ["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
    cmd += ["--ip-forward=false", "--storage-driver", "overlay2"]
    log = open(ROOT / "dockerd.log", "ab")  # noqa: SIM115  (the daemon keeps it)
    return subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)


def _stop_dockerd(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    netns = ROOT / "exec" / "netns" / "default"
    if netns.exists():
        subprocess.run(["umount", str(netns)], capture_output=True)


def _import_base(engine: Engine, suite: str, tag: str) -> None:
    """debootstrap minbase with Python and venv, imported as an image (about 40 s)."""
    from envs import _redacted, apt_mirror

    mirror = apt_mirror()
    if not mirror:
        raise RuntimeError("no Debian mirror in /etc/apt/sources.list.d/debian.sources")
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{suite}-", dir=ROOT) as tmp:
        root = Path(tmp) / "root"
        cmd = ["unshare", "--mount", "--propagation", "private", "--", "debootstrap"]
        cmd += ["--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
        done = subprocess.run([*cmd, suite, str(root), mirror], capture_output=True, text=True)
        if done.returncode != 0:
            tail = _redacted((done.stdout + done.stderr)[-3000:], mirror)
            raise RuntimeError(f"debootstrap {suite} failed ({done.returncode}):\n{tail}")
        (root / "etc/apt/sources.list").write_text("")  # debootstrap wrote the mirror there
        (root / "var/log/bootstrap.log").unlink(missing_ok=True)  # so did its log
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for item in (root / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "--host", engine.host, "import", "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import {tag} failed: {imported.stderr.strip()}")


def _recipe() -> str:
    """What a `daskstep images build` image is made from, besides its arguments."""
    repo = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted((repo / "images").rglob("*")) + [repo / "daskstep" / "images.py"]:
        if path.is_file():
            digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def dask_image(engine: Engine, version: str, suite: str) -> str:
    """A Dask image built by `daskstep images build`, once per machine for each recipe: its
    tag names the recipe's digest, and the engine's data root outlives the session. (The build
    itself is tested by test_images.py, which builds every time.)"""
    import docker

    tag = f"daskstep-test/dask:{version}-{suite}-{_recipe()}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.client.images.get(tag)
        return tag
    cmd = [sys.executable, "-m", "daskstep", "images", "build", "--dask", version]
    cmd += ["--base", BASES[suite], "--tag", tag]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "DOCKER_HOST": engine.host}
    )
    if done.returncode != 0:
        raise RuntimeError(f"daskstep images build {tag} failed:\n{done.stderr[-3000:]}")
    prefix = f"daskstep-test/dask:{version}-{suite}"
    for image in engine.client.images.list(name="daskstep-test/dask"):
        for old in image.tags:  # the same image from an earlier recipe
            if old.startswith(prefix) and old != tag:
                with contextlib.suppress(docker.errors.APIError):
                    engine.client.images.remove(old)
    return tag


def derived_image(engine: Engine, tag: str, base: str, command: str) -> str:
    """A small image made from a base by one shell command (the engine's cache keeps it)."""
    dockerfile = f"FROM {base}\nRUN {command}\n".encode()
    engine.client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, forcerm=True, network_mode="none"
    )
    return tag


def dangling_from(engine: Engine, base: str) -> set[str]:
    """`docker images -f dangling=true` (untagged images nothing builds on), only those built
    on `base`: what other builds on the same engine leave is not counted."""
    import docker

    root = engine.client.images.get(base).id
    found = set()
    for row in engine.client.api.images(filters={"dangling": True}):
        image = row["Id"]
        with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
            while image and image != root:
                image = engine.client.api.inspect_image(image).get("Parent") or ""
            if image == root:
                found.add(row["Id"])
    return found


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """The private engine, with the base images; DOCKER_HOST is set for the session."""
    from conftest import require

    missing = docker_missing()
    require(not missing, missing)
    import docker

    host = f"unix://{SOCKET}"
    proc = None
    if not _answers(host):  # else: a daemon of an earlier session, left for the next one
        ROOT.mkdir(parents=True, exist_ok=True)
        proc = _start_dockerd()
        deadline = time.monotonic() + 60
        while not _answers(host):
            assert proc.poll() is None, (ROOT / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.1)
    engine = Engine(host, docker.DockerClient(base_url=host))
    # A session killed with its engine (CI cancelled, the machine reset) leaves its runs'
    # containers in the data root, and no reaper of theirs is left: the tests judge leftovers
    # by that label, so the session starts without any.
    for row in engine.client.api.containers(all=True, filters={"label": "daskstep.run"}):
        with contextlib.suppress(Exception):
            engine.client.api.remove_container(row["Id"], force=True, v=True)
    for suite, tag in BASES.items():
        if not engine.image_exists(tag):
            _import_base(engine, suite, tag)
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    try:
        yield engine
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        engine.client.close()
        if proc is not None:
            with contextlib.suppress(Exception):
                _stop_dockerd(proc)
