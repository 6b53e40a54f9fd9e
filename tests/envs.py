"""Built environments for the portability tests: a Debian bullseye root filesystem (Python 3.9,
no Dask) and virtual environments holding past `distributed` releases, plus real clusters of
each version.

The builders are slow (about a minute each), so their results are cached outside the clone,
under /var/tmp/daskstep-envs (DASKSTEP_ENVS_CACHE), as the Docker images and HTCondor are: a
clean clone on a warm machine reuses them. Each is built in a temporary folder and renamed when
complete, under a file lock, so an interrupted or concurrent build is never mistaken for a
finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import require

BUILD = Path(os.environ.get("DASKSTEP_ENVS_CACHE", "/var/tmp/daskstep-envs"))
BULLSEYE = BUILD / "rootfs" / "bullseye"
DASK_VERSIONS_DIR = BUILD / "dask-versions"
DASK_VERSIONS = ("2023.3.2", "2024.1.1", "2025.1.0")
NEWEST = "newest"  # the project's own .venv, which has the newest distributed
PATH = "/usr/local/bin:/usr/bin:/bin"


# ---------------------------------------------------------------- building, cached


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One builder per target at a time, across pytest sessions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def _remove_stale(parent: Path, pattern: str) -> None:
    """Leftovers of an interrupted build; never delete through something still mounted."""
    for stale in parent.glob(pattern):
        if _mounts_under(stale):
            raise RuntimeError(f"{stale} still has mounts; unmount them, then delete it")
        shutil.rmtree(stale, ignore_errors=True)


def apt_mirror() -> str | None:
    """The machine's Debian mirror, read at run time: its address must never land in the repo."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and len(line.split()) > 1:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "deb":
                return next(p for p in parts[1:] if not p.startswith("["))
    return None


def _redacted(text: str, secret: str) -> str:
    host = re.sub(r"^[a-z]+://", "", secret).split("/")[0]
    return text.replace(secret, "<mirror>").replace(host, "<mirror>") if host else text


def build_bullseye(root: Path = BULLSEYE) -> Path:
    """Debian bullseye minbase with python3 (3.9): the oldest Python the entrypoint supports."""
    if (root / "usr/bin/python3").exists():
        return root
    mirror = apt_mirror()
    if not mirror:
        raise RuntimeError("no Debian mirror in /etc/apt/sources.list.d/debian.sources")
    with _locked(root):
        if (root / "usr/bin/python3").exists():
            return root  # another session built it while we waited
        _remove_stale(root.parent, f".{root.name}.tmp-*")
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        # In a private mount namespace, debootstrap's /proc and /sys mounts vanish with it, even
        # when it is interrupted, so nothing stays mounted under the cache.
        cmd = ["unshare", "--mount", "--propagation", "private", "--"]
        cmd += ["debootstrap", "--variant=minbase", "--include=python3", "bullseye", str(tmp)]
        done = subprocess.run([*cmd, mirror], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = _redacted((done.stdout + done.stderr)[-3000:], mirror)
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"debootstrap bullseye failed ({done.returncode}):\n{tail}")
        (tmp / "etc/apt/sources.list").write_text("")  # debootstrap wrote the mirror there
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for item in (tmp / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        (tmp / "var/log/bootstrap.log").unlink(missing_ok=True)  # it names the mirror too
        (tmp / "work").mkdir(exist_ok=True)
        tmp.rename(root)
    return root


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('distributed'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def build_dask_venv(version: str, base: Path = DASK_VERSIONS_DIR) -> Path:
    """A virtualenv with `distributed==version` (and its matching dask) on this Python."""
    venv = base / version
    if _installed_version(venv / "bin/python") == version:
        return venv
    with _locked(venv):
        if _installed_version(venv / "bin/python") == version:
            return venv
        _remove_stale(base, f".{version}.tmp-*")
        if venv.exists():
            shutil.rmtree(venv)  # broken, e.g. its base interpreter went away
        tmp = base / f".{version}.tmp-{os.getpid()}"
        python = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [python, "-m", "venv", str(tmp)],
            [str(tmp / "bin/python"), "-m", "pip", "install", "-q", f"distributed=={version}"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                out = (done.stdout + done.stderr)[-3000:]
                raise RuntimeError(f"{' '.join(step[-3:])} failed ({done.returncode}):\n{out}")
        # A venv's console scripts name their own path, so after the rename the tests run every
        # tool as `bin/python -m ...`; bin/python and site-packages are found relative to it.
        tmp.rename(venv)
    return venv


def dask_python(version: str) -> Path:
    """The interpreter of one matrix entry; "newest" is the project's own virtualenv."""
    if version == NEWEST:
        return Path(sys.prefix) / "bin" / "python"
    return build_dask_venv(version) / "bin" / "python"


def distributed_version(python: Path) -> str:
    version = _installed_version(python)
    assert version, f"no distributed in {python}"
    return version


# ---------------------------------------------------------------- interpreters for the zipapp


@dataclass
class Interpreter:
    """How to run the zipapp with a Python that has no Dask, and where it sees its files."""

    name: str
    python: list[str]  # argv up to the interpreter; `env -i VAR=...` goes before its last item
    pyz: str  # the zipapp's path as the interpreter sees it
    root: Path | None = None  # chroot, if any
    scratch: list[Path] = field(default_factory=list)

    def argv(self, *args: str, env: dict[str, str] | None = None, pyz: bool = True) -> list[str]:
        """`env -i` so the step sees only what the test gives it, as in a bare container."""
        assigns = [f"{k}={v}" for k, v in {"PATH": PATH, **(env or {})}.items()]
        head, interp = self.python[:-1], self.python[-1]
        return [*head, "env", "-i", *assigns, interp, "-I", *([self.pyz] if pyz else []), *args]

    def folder(self) -> tuple[Path, str]:
        """A fresh scratch folder: its path here, and as the interpreter sees it."""
        if self.root is None:
            path = Path(tempfile.mkdtemp(prefix="daskstep-portable-"))
            self.scratch.append(path)
            return path, str(path)
        path = Path(tempfile.mkdtemp(prefix="daskstep-portable-", dir=self.root / "tmp"))
        path.chmod(0o755)
        self.scratch.append(path)
        return path, "/" + str(path.relative_to(self.root))

    def cleanup(self) -> None:
        for path in self.scratch:
            _rm_file_or_tree(path)
        self.scratch.clear()


def host_interpreter(pyz: Path) -> Interpreter:
    return Interpreter("host-python3", ["/usr/bin/python3"], str(pyz))


def chroot_interpreter(root: Path, pyz: Path) -> Interpreter:
    """The bullseye rootfs with its Python 3.9. `unshare --mount-proc` gives it a /proc of its
    own mount namespace, which disappears with the last process in it: nothing stays mounted.
    unshare, chroot and env each exec the next, so the pid Popen returns is the wrapper's."""
    inside = f"/work/ep-{uuid.uuid4().hex[:8]}.pyz"
    shutil.copyfile(pyz, root / inside.lstrip("/"))
    head = ["unshare", f"--mount-proc={root / 'proc'}", "chroot", str(root), "/usr/bin/python3"]
    interp = Interpreter("bullseye-python3.9", head, inside, root=root)
    interp.scratch.append(root / inside.lstrip("/"))
    return interp


def _rm_file_or_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- real clusters


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """TERM then KILL the process group a fixture started, and reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Stragglers of the group (a worker's own children) after the leader is gone.
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == proc.pid:
                p.kill()


@dataclass
class Cluster:
    version: str
    python: Path
    address: str  # tcp://127.0.0.1:PORT
    dashboard: str  # http://127.0.0.1:PORT, for counting workers without `distributed`
    folder: Path
    procs: list[subprocess.Popen]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the scheduler
            kill_group(proc)


def _dask_cli(python: Path, tool: str) -> list[str]:
    """`dask scheduler`/`dask worker` through `python -m`, which every version in the matrix has
    (console scripts are not used: their shebangs name the folder the venv was built in)."""
    return [str(python), "-m", f"distributed.cli.dask_{tool}"]


def _die_with_us() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL, so a
    killed pytest leaves no scheduler behind (workers follow through --death-timeout)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _count(path: Path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


def start_cluster(version: str, workers: int, folder: Path) -> Cluster:
    """A scheduler and `workers` workers of one version, on 127.0.0.1 with free ports."""
    python = dask_python(version)
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", PATH),
        "HOME": str(folder),
        "DASK_CONFIG": str(folder / "config"),  # no user configuration leaks in
        "DASK_TEMPORARY_DIRECTORY": str(folder),
    }
    sched_file = folder / "scheduler.json"
    sched_log = folder / "scheduler.log"
    procs: list[subprocess.Popen] = []
    cluster = Cluster(version, python, "", "", folder, procs)

    def spawn(argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,
                start_new_session=True,
                preexec_fn=_die_with_us,
            )
        procs.append(proc)
        return proc

    try:
        scheduler = spawn(
            [
                *_dask_cli(python, "scheduler"),
                "--host", "127.0.0.1",
                "--port", "0",
                "--scheduler-file", str(sched_file),
                "--dashboard-address", "127.0.0.1:0",
            ],
            sched_log,
        )  # fmt: skip
        written = lambda: sched_file.exists() and sched_file.stat().st_size > 0  # noqa: E731
        _wait(written, 60, scheduler, sched_log, "the scheduler file")
        info = json.loads(sched_file.read_text())
        cluster.address = info["address"]
        port = info.get("services", {}).get("dashboard")  # none without bokeh (old venvs)
        cluster.dashboard = f"http://127.0.0.1:{port}" if port else ""
        for i in range(workers):
            spawn(
                [
                    *_dask_cli(python, "worker"),
                    "--scheduler-file", str(sched_file),
                    "--host", "127.0.0.1",
                    "--nthreads", "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--memory-limit", "0",
                    "--death-timeout", "60",
                    "--local-directory", str(folder / f"worker-{i}"),
                    "--name", f"w{i}",
                ],
                folder / f"worker-{i}.log",
            )  # fmt: skip
        registered = lambda: _count(sched_log, "Register worker") >= workers  # noqa: E731
        _wait(registered, 90, scheduler, sched_log, f"{workers} workers to register")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(
    predicate: Callable[[], object], timeout: float, proc: subprocess.Popen, log: Path, what: str
) -> None:
    """Until `predicate()`; fails early, with the log's tail, when the process died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"waiting for {what} failed (exit {proc.poll()}):\n{tail}")
        time.sleep(0.1)


class ClusterPool:
    """Clusters started on first use and kept for the session; few alive at once, to spare RAM
    and the two cores, since each test needs only one."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder, self.keep = folder, keep
        self.alive: dict[tuple[str, int], Cluster] = {}

    def get(self, version: str, workers: int) -> Cluster:
        key = (version, workers)
        if key in self.alive:
            self.alive[key] = self.alive.pop(key)  # most recently used last
            return self.alive[key]
        while len(self.alive) >= self.keep:
            oldest = next(iter(self.alive))
            self.alive.pop(oldest).stop()
        name = f"{version}-{workers}w-{uuid.uuid4().hex[:6]}"
        self.alive[key] = start_cluster(version, workers, self.folder / name)
        return self.alive[key]

    def stop(self) -> None:
        while self.alive:
            self.alive.popitem()[1].stop()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zipapp, packed once from this checkout; DASKSTEP_TEST_PYZ tests a given one instead
    (e.g. the artifact an image ships)."""
    given = os.environ.get("DASKSTEP_TEST_PYZ")
    if given:
        return Path(given).resolve()
    from daskstep.pack import pack

    return pack(tmp_path_factory.mktemp("pyz") / "daskstep-entrypoint.pyz")


@pytest.fixture(scope="session")
def bullseye_root() -> Path:
    require(os.geteuid() == 0, "the bullseye chroot needs root")
    require(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    if not (BULLSEYE / "usr/bin/python3").exists():
        require(shutil.which("debootstrap") is not None, "debootstrap is not installed")
        require(apt_mirror() is not None, "no Debian mirror in the apt sources")
    return _built(build_bullseye)


@pytest.fixture(scope="session")
def dask_pythons() -> dict[str, Path]:
    """Every version of the matrix, built (or found cached) up front: version -> interpreter."""
    return {v: _built(dask_python, v) for v in (*DASK_VERSIONS, NEWEST)}


def _built(builder: Callable[..., Path], *args: str) -> Path:
    """A build that cannot reach its package registry is a missing server: skipped here with
    the reason, a failure in CI (see conftest.require)."""
    try:
        return builder(*args)
    except RuntimeError as e:
        require(False, f"cannot build the environment: {e}")
        raise


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """Module-scoped: other test files count the test process's children, so none may linger."""
    pool = ClusterPool(tmp_path_factory.mktemp("clusters"))
    yield pool
    pool.stop()
