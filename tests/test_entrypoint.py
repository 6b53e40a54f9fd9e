"""The entrypoint's loop with fakes (as Tekton's entrypointer tests), and its runner on real
processes and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for, wait_gone

from entrypoint.core import (
    Entrypointer,
    Readiness,
    RunResult,
    SchedulerUnavailable,
    Status,
)
from entrypoint.runner import ProcessRunner
from entrypoint.waiter import normalise_uri

ENTRYPOINT = [sys.executable, "-m", "entrypoint"]


class FakeWaiter:
    def __init__(self, ready: Readiness | None = None, error: Exception | None = None) -> None:
        self.ready, self.error, self.calls = ready or Readiness(), error, 0

    def wait(self) -> Readiness:
        self.calls += 1
        if self.error:
            raise self.error
        return self.ready


class FakeRunner:
    def __init__(self, result: RunResult | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result or RunResult(0, "Completed"), error
        self.env: dict[str, str] | None = None

    def run(self, commands: list[list[str]], env: dict[str, str]) -> RunResult:
        self.env = env
        if self.error:
            raise self.error
        return self.result


class FakeReporter:
    def __init__(self) -> None:
        self.written: list[Status] = []

    def write(self, status: Status) -> None:
        self.written.append(status)


def test_loop_exports_the_scheduler_and_reports_the_child_code() -> None:
    runner, reporter = FakeRunner(RunResult(7, "Error", 1234)), FakeReporter()
    waiter = FakeWaiter(Readiness("tcp://127.0.0.1:8786", 3))
    code = Entrypointer(waiter, runner, reporter).go([["true"]], {"HOME": "/root"})
    assert code == 7
    assert runner.env["DASK_SCHEDULER_URI"] == "tcp://127.0.0.1:8786"
    assert runner.env["DASK_SCHEDULER_ADDRESS"] == "tcp://127.0.0.1:8786"
    [status] = reporter.written
    assert (status.reason, status.exit_code, status.workers, status.peak_rss_bytes) == (
        "Error",
        7,
        3,
        1234,
    )


def test_loop_does_not_run_the_command_when_the_scheduler_never_came() -> None:
    runner, reporter = FakeRunner(), FakeReporter()
    waiter = FakeWaiter(error=SchedulerUnavailable("unreachable"))
    assert Entrypointer(waiter, runner, reporter).go([["true"]], {}) == 69
    assert runner.env is None
    assert reporter.written[0].reason == "SchedulerUnavailable"


def test_loop_writes_the_status_even_when_the_wrapper_itself_crashes() -> None:
    reporter = FakeReporter()
    with pytest.raises(ZeroDivisionError):
        Entrypointer(FakeWaiter(), FakeRunner(error=ZeroDivisionError()), reporter).go([[]], {})
    assert reporter.written[0].exit_code == 70
    assert "ZeroDivisionError" in reporter.written[0].message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("host:8786", "tcp://host:8786"),
        ("tls://h:1", "tls://h:1"),
        (" 127.0.0.1:1 ", "tcp://127.0.0.1:1"),
    ],
)
def test_scheduler_addresses_get_a_scheme(given: str, expected: str) -> None:
    assert normalise_uri(given) == expected


@pytest.mark.parametrize(
    ("script", "code"), [("exit 0", 0), ("exit 1", 1), ("exit 7", 7), ("kill -9 $$", 137)]
)
def test_exit_codes_pass_through(script: str, code: int) -> None:
    result = ProcessRunner().run([["sh", "-c", script]], dict(os.environ))
    assert result.exit_code == code
    assert result.reason == ("Completed" if code == 0 else "Signaled" if code > 128 else "Error")


def test_shell_commands_stop_at_the_first_failure(tmp_path: Path) -> None:
    marker = tmp_path / "never"
    commands = [["sh", "-c", "exit 0"], ["sh", "-c", "exit 4"], ["touch", str(marker)]]
    assert ProcessRunner().run(commands, dict(os.environ)).exit_code == 4
    assert not marker.exists()


def test_timeout_kills_the_group_and_gives_124(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    cmd = f"sh -c 'echo $$ > {pidfile}; exec sleep 60' & wait"
    t = time.monotonic()
    result = ProcessRunner(timeout=1, grace_period=1).run([["sh", "-c", cmd]], dict(os.environ))
    assert (result.exit_code, result.reason) == (124, "TimeoutExceeded")
    assert time.monotonic() - t < 10
    assert wait_gone({int(pidfile.read_text())}, 2) == set()


def test_sigterm_to_the_wrapper_gives_143_and_writes_the_status(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    started = tmp_path / "started"
    wrapper = subprocess.Popen(
        [*ENTRYPOINT, "--status-file", str(status), "--", "sh", "-c", f"touch {started}; sleep 60"],
        cwd=Path(__file__).parent.parent,
    )
    wait_for(started.exists, 30, "the command to start")
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 143
    doc = json.loads(status.read_text())
    assert (doc["reason"], doc["exit_code"]) == ("Signaled", 143)
    assert {"started_at", "finished_at", "scheduler", "workers", "peak_rss_bytes"} <= set(doc)


def test_usage_error_is_64_and_still_leaves_a_status(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    code = subprocess.call(
        [*ENTRYPOINT, "--status-file", str(status), "--no-such-flag"],
        stderr=subprocess.DEVNULL,
    )
    assert code == 64
    assert json.loads(status.read_text())["exit_code"] == 64


def test_absent_scheduler_gives_69_within_the_timeout() -> None:
    t = time.monotonic()
    code = subprocess.call(
        [*ENTRYPOINT, "--scheduler", "127.0.0.1:9", "--wait-timeout", "1", "--", "true"],
        stderr=subprocess.DEVNULL,
    )
    assert code == 69
    assert time.monotonic() - t < 5
