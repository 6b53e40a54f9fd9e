"""The sidecars' stop flag under real signals: a storm of SIGTERMs that lands inside wait() and
inside the handler itself must neither hang nor crash the process.

A `threading.Event` set from the handler failed this test (hangs, RecursionError, exit by
SIGTERM) and left `daskstep sidecar logs` running forever after `daskstep run` was killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import daskstep, script

from sidecar.lifecycle import StopSignal

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

WAITER = script(
    """
    import os, sys
    from sidecar.lifecycle import StopSignal

    stop = StopSignal().install()
    print("ready", flush=True)
    stopped = False
    while not os.path.exists(sys.argv[1]):
        stopped = stop.wait(0.001) or stopped
    print("stopped" if stopped else "never stopped", flush=True)
    """
)


def _storm(pid: int, seconds: float) -> int:
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        os.kill(pid, signal.SIGTERM)
        sent += 1
    return sent


def test_a_storm_of_sigterms_neither_hangs_nor_crashes_the_waiter(tmp_path: Path) -> None:
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER)
    for round_ in range(10):
        done = tmp_path / f"done-{round_}"
        proc = subprocess.Popen(
            [sys.executable, str(waiter), str(done)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            sent = _storm(proc.pid, 0.3)
            done.touch()
            out, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, f"round {round_}: exit {proc.returncode} after {sent}: {err}"
        assert out == "stopped\n"


def test_wait_returns_early_when_set_and_times_out_otherwise(tmp_path: Path) -> None:
    stop = StopSignal(tmp_path / "stop-file", file_poll=0.01)
    t = time.monotonic()
    assert stop.wait(0.05) is False
    assert time.monotonic() - t >= 0.05
    (tmp_path / "stop-file").touch()
    assert stop.wait(10) is True
    assert StopSignal().wait(0) is False
    other = StopSignal()
    other.set()
    t = time.monotonic()
    assert other.wait(10) is True and time.monotonic() - t < 1


def _sidecar_that_shipped(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A log sidecar that has shipped a whole file into the store: (it, the file, the store's)."""
    raw = tmp_path / "raw.log"
    raw.write_text("".join(f"line {i}\n" for i in range(1000)))
    proc = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", f"job={raw}")
    store = tmp_path / ".daskstep" / "logs" / "job.log"
    deadline = time.monotonic() + 30
    while not (store.exists() and store.stat().st_size == raw.stat().st_size):
        assert time.monotonic() < deadline, "the sidecar never shipped the file"
        time.sleep(0.05)
    return proc, raw, store


def test_the_log_sidecar_drains_and_exits_0_on_two_sigterms_at_once(tmp_path: Path) -> None:
    """What a killed `daskstep run` sends: the kernel's parent-death signal and the sidecar's
    own check that its parent changed."""
    proc, raw, store = _sidecar_that_shipped(tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert store.read_text() == raw.read_text()


def test_real_signals_are_counted_through_the_pipe_and_handlers_go_back(tmp_path: Path) -> None:
    """No Python code runs per signal (nothing to re-enter under a storm; a flag-and-pipe
    handler in Python recursed past the limit once in CI), yet each signal still counts."""
    before_term = signal.getsignal(signal.SIGTERM)
    before_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before_fd)
    stop = StopSignal().install()
    try:
        assert not hasattr(signal.getsignal(signal.SIGTERM), "__code__")
        assert stop.is_set() is False and stop.signals == 0
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5) is True
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while stop.signals < 2:
            assert time.monotonic() < deadline, "the second signal was not counted"
            time.sleep(0.01)
        assert stop.signum == signal.SIGTERM
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert signal.set_wakeup_fd(before_fd) == before_fd


def test_the_log_sidecar_exits_0_however_late_a_second_sigterm_comes(tmp_path: Path) -> None:
    """A second SIGTERM may come at any moment of the stop, its very end included: the exit of
    the interpreter put the default action back, and a drained sidecar ended killed (-15)."""
    proc, raw, store = _sidecar_that_shipped(tmp_path)
    deadline = time.monotonic() + 20
    while proc.poll() is None:  # SIGTERMs until it is gone
        assert time.monotonic() < deadline, "the sidecar did not stop"
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.001)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert store.read_text() == raw.read_text()
