"""The local backend on real scheduler and worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import descendants, wait_for, wait_gone

from daskstep.backends import ClusterSpec, get_backend
from daskstep.backends.local import LocalBackend

pytestmark = pytest.mark.integration


def cluster_processes(backend: LocalBackend) -> set[int]:
    """The launcher and its tree: not every child of pytest, which may run other servers."""
    launcher = backend._proc.pid
    return {launcher, *descendants(launcher)}


@pytest.fixture
def backend():
    b = get_backend("local")
    yield b
    b.stop()


def test_memory_and_threads_are_what_the_scheduler_reports(backend, tmp_path: Path) -> None:
    backend.start(ClusterSpec(workers=2, threads=3, memory="768Mi"), tmp_path)
    assert backend.wait_ready(2, timeout=60) == 2
    workers = backend.scheduler_info()["workers"].values()
    assert [w["memory_limit"] for w in workers] == [768 * 2**20] * 2
    assert [w["nthreads"] for w in workers] == [3, 3]
    assert sorted(w["name"] for w in workers) == ["worker-0", "worker-1"]
    assert all(w["host"] == "127.0.0.1" for w in workers)
    assert backend.handle.scheduler_address.startswith("tcp://127.0.0.1:")


def test_stop_is_idempotent_and_kills_the_whole_tree(backend, tmp_path: Path) -> None:
    backend.stop()  # before start: a no-op
    backend.start(ClusterSpec(workers=2, threads=1, memory="256Mi"), tmp_path)
    backend.wait_ready(2, timeout=60)
    pids = cluster_processes(backend)
    assert len(pids) >= 4  # launcher, scheduler, two workers
    backend.stop()
    backend.stop()
    assert wait_gone(pids, 1) == set()


def test_a_crashed_worker_is_restarted_under_its_name(backend, tmp_path: Path) -> None:
    backend.start(ClusterSpec(workers=2, threads=1, memory="256Mi"), tmp_path)
    backend.wait_ready(2, timeout=60)
    victim = backend.status()["worker_pids"]["worker-1"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: backend.status()["restarts"] == 1, 30, "the launcher to see the crash")
    backend.wait_ready(2, timeout=60)
    names = sorted(w["name"] for w in backend.scheduler_info()["workers"].values())
    assert names == ["worker-0", "worker-1"]
    assert backend.status()["worker_pids"]["worker-1"] != victim


def test_a_worker_past_its_memory_budget_is_killed_and_restarted(backend, tmp_path) -> None:
    from distributed import Client

    backend.start(ClusterSpec(workers=1, threads=1, memory="200Mi"), tmp_path)
    backend.wait_ready(1, timeout=60)

    def hog() -> int:
        block = bytearray(400 * 2**20)  # pages touched: real RSS
        time.sleep(30)
        return len(block)

    with Client(backend.handle.scheduler_address) as client:
        client.submit(hog, pure=False)
        wait_for(lambda: backend.status()["restarts"] >= 1, 30, "the memory watchdog")
    log = (tmp_path / ".daskstep" / "raw" / "workers" / "worker-0.log").read_text()
    assert "past 95% of its" in log and "restarting it" in log
    backend.wait_ready(1, timeout=60)


def test_the_launcher_stops_the_cluster_when_its_controller_vanishes(tmp_path: Path) -> None:
    """What SIGKILL of the controller amounts to: the launcher's stdin reaches EOF."""
    backend = LocalBackend()
    backend.start(ClusterSpec(workers=2, threads=1, memory="256Mi"), tmp_path)
    backend.wait_ready(2, timeout=60)
    launcher = backend._proc
    pids = {launcher.pid, *descendants(launcher.pid)}
    launcher.stdin.close()
    assert wait_gone(pids, 10) == set()
    backend.stop()


def test_too_few_workers_is_a_typed_timeout_and_stop_still_cleans_up(tmp_path) -> None:
    from daskstep.errors import TooFewWorkers

    backend = LocalBackend()
    backend.start(ClusterSpec(workers=1, threads=1, memory="256Mi"), tmp_path)
    pids = cluster_processes(backend)
    t = time.monotonic()
    with pytest.raises(TooFewWorkers, match="only 1 of 3 workers registered within 2 s"):
        backend.wait_ready(3, timeout=2)
    assert time.monotonic() - t < 10
    backend.stop()
    assert wait_gone(pids, 2) == set()
