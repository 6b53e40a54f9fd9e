"""Shared fixtures: real processes, and a helper that tells which processes a run left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from daskstep.backends.forked import LAUNCHER_NAME, SCHEDULER_NAME, WORKER_NAME

REQUIRE_INTEGRATION = os.environ.get("DASKSTEP_REQUIRE_INTEGRATION") == "1"

# Session-wide servers, as fixtures every test module can ask for.
from condor_farm import condor_farm  # noqa: E402, F401
from dockerd import docker_engine  # noqa: E402, F401
from gridca import grid_ca  # noqa: E402, F401
from htcondor import daskstep_bin  # noqa: E402, F401
from kdc import kdc  # noqa: E402, F401
from slurm import slurm  # noqa: E402, F401
from slurm_farm import slurm_farm  # noqa: E402, F401
from vomsd import vomsd  # noqa: E402, F401

# The suite runs in parallel (pytest-xdist, `--dist loadgroup`, see the Makefile): each module is
# one group, so its module-scoped servers start once; modules that use one of these session
# servers, whose state or cache is one per machine (a Docker engine's data root, a Slurm's
# step daemons, HTCondor's and the old Pythons' caches), share one group, so one worker
# starts that server and runs them all.
MACHINE_WIDE = {
    "docker_engine": "docker",
    "slurm": "slurm",
    "slurm_farm": "slurm",  # its job step daemons are on the same machine as the one-node's
    "pool": "htcondor",
    "condor_farm": "htcondor",  # the same cached binaries, job venv and pools folder
    "bullseye_root": "old-pythons",
    "dask_pythons": "old-pythons",
}


# Measured in CI: the Docker group is the longest, then Slurm's, then the old Pythons'.
MACHINE_WIDE_BY_SIZE = ("docker", "slurm", "old-pythons", "htcondor")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        for fixture, group in MACHINE_WIDE.items():
            if fixture in getattr(item, "fixturenames", ()):
                groups.setdefault(module, group)
    of: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        of[item.nodeid] = groups.get(module, module)
        item.add_marker(pytest.mark.xdist_group(of[item.nodeid]))
    # Longest first (the Makefile turns xdist's own order, by test count, off): a group of
    # slow tests started last would leave the other worker idle at the end.
    cost: dict[str, int] = {}
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        cost[of[item.nodeid]] = cost.get(of[item.nodeid], 0) + (20 if slow else 1)
    for rank, group in enumerate(MACHINE_WIDE_BY_SIZE):
        cost[group] = 100_000 - rank
    items.sort(key=lambda item: -cost[of[item.nodeid]])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Groups that xdist did not take would let two workers drive the one Docker engine at
    once (pytest 9.2 and xdist 3.8 lost them without a word): then nothing runs."""
    if getattr(session.config.option, "loadgroup", False) and session.items:
        lost = [item.nodeid for item in session.items if "@" not in item.nodeid]
        if lost:
            raise pytest.UsageError(f"pytest-xdist lost the test groups (e.g. {lost[0]})")


def require(available: bool, reason: str) -> None:
    """Skip when a server is missing here; in CI (DASKSTEP_REQUIRE_INTEGRATION=1) fail instead."""
    if available:
        return
    if REQUIRE_INTEGRATION:
        pytest.fail(f"integration requirement missing: {reason}")
    pytest.skip(reason)


def write_workflow(
    folder: Path,
    steps: list[tuple[str, list[str]]],
    workers: int = 2,
    memory: str = "1Gi",
    threads: int = 1,
    flags: tuple[str, ...] = (),
) -> Path:
    """A reana.yaml asking for a small cluster, with the given (name, commands) steps, and
    REANA's resource flags (kerberos, voms_proxy) set to true."""
    lines = [
        "workflow:",
        "  type: serial",
        "  resources:",
        "    dask:",
        "      image: docker.io/daskstep/test:1.0",
        f"      number_of_workers: {workers}",
        f"      single_worker_memory: {memory}",
        f"      single_worker_threads: {threads}",
        *(f"    {flag}: true" for flag in flags),
        "  specification:",
        "    steps:",
    ]
    for name, commands in steps:
        lines.append(f"      - name: {name}")
        lines.append("        commands:")
        lines.extend(f"          - {json.dumps(c)}" for c in commands)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reana.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def execute_returning(code: int):
    """A stand-in for `Run.execute` that ends as teardown would: the run's private folder (TLS
    keys) and the reaper guarding it go, instead of living as long as the test session."""

    def execute(run) -> int:
        if run.credentials is not None:
            run.credentials.stop()
        return code

    return execute


def daskstep(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "daskstep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def descendants(pid: int) -> set[int]:
    """The process's descendants, but for the run's report writer, which outlives the run by
    design (the prompt does not wait for it) and ends by itself once the report is drawn."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return set()
    return {p.pid for p in found if not _report_writer(p)}


def _report_writer(p: psutil.Process) -> bool:
    try:
        return "daskstep.report" in p.cmdline()
    except psutil.Error:
        return False


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """The pids still alive after `timeout` seconds (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a test registers here are killed at the end, so a failing test leaves nothing."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        for p in [pid, *descendants(pid)]:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


def script(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


# Every process this session starts inherits the mark, so that the leak check below judges only
# this session's processes: another pytest session on the machine has runs of its own alive.
SESSION = "DASKSTEP_TEST_SESSION"
os.environ[SESSION] = f"{os.getpid()}-{time.time()}"


FORKED_NAMES = (LAUNCHER_NAME, SCHEDULER_NAME, WORKER_NAME)


def _our_processes() -> set[int]:
    """Processes that only daskstep starts (launchers, step entrypoints and sidecars), started
    by this test session."""
    found = set()
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        ours = ("daskstep.backends.launcher", "-m entrypoint", ".pyz", "daskstep sidecar")
        ours += ("-m sidecar.",)
        # a launcher forked from a run, and what it forked, have the run's command line
        if p.info["name"] in FORKED_NAMES or any(mark in cmd for mark in ours):
            with contextlib.suppress(psutil.Error):
                if p.environ().get(SESSION) == os.environ[SESSION]:
                    found.add(p.pid)
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Whatever the tests did, the session must not leave a daskstep process behind."""
    before = _our_processes()
    yield
    left = wait_gone(_our_processes() - before, 10)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"daskstep processes left running after the tests: {sorted(left)}"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _signal_state() -> tuple:
    """What a child started now would inherit (ignored and blocked signals survive exec), and
    this process's own handlers."""
    status = Path("/proc/self/status").read_text().splitlines()
    inherited = [line for line in status if line.startswith(("SigIgn", "SigBlk"))]
    handlers = [signal.getsignal(s) for s in STOP_SIGNALS]
    return inherited, handlers, signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.fixture(autouse=True)
def signals_left_as_found() -> Iterator[None]:
    """A test that runs daskstep's code in-process must give the signals back: a SIGINT left
    ignored or blocked in a worker reaches every later test's children (a Ctrl-C that does
    not stop `tee`)."""
    before = _signal_state()
    yield
    after = _signal_state()
    assert after == before, f"the test changed this process's signals: {before} -> {after}"


@pytest.fixture
def store(tmp_path: Path):
    """A log store for the source tests."""
    from sidecar.store import LogStore

    s = LogStore(tmp_path / "logs")
    yield s
    s.close()


@pytest.fixture
def kubelet():
    from log_fakes import FakeKubelet

    return FakeKubelet()
