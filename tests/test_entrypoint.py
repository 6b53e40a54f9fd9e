"""The entrypoint's loop with fakes (as Tekton's entrypointer tests), and its runner on real
processes and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import require, wait_for, wait_gone
from ports import free_port

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


def test_sigterm_while_waiting_for_the_scheduler_gives_143_and_a_status(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    started = tmp_path / "started"
    wrapper = subprocess.Popen(
        [*ENTRYPOINT, "--status-file", str(status), "--scheduler", "127.0.0.1:9"]
        + ["--", "touch", str(started)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "waiting for scheduler" in wrapper.stderr.readline()
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) == 143
    assert not started.exists()
    doc = json.loads(status.read_text())
    assert (doc["reason"], doc["exit_code"]) == ("Signaled", 143)
    assert "did not start" in doc["message"]


# The parent is a shell that starts the wrapper and waits: it is SIGKILLed, as `daskstep run`
# may be, while the wrapper still waits for a scheduler that will never come (the run's reaper
# has removed it). The wrapper must not wait out its 300 s.
ORPHAN = """
import os, subprocess, sys
env = dict(os.environ, DASKSTEP_PARENT_PID=str(os.getpid()))
child = subprocess.Popen(sys.argv[1:], env=env)
print(child.pid, flush=True)
child.wait()
"""


def test_a_wrapper_waiting_for_the_scheduler_dies_with_its_parent(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, *ENTRYPOINT, "--die-with-parent"]
        + ["--status-file", str(status), "--scheduler", "127.0.0.1:9", "--", "true"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wrapper = int(parent.stdout.readline())
    assert "waiting for scheduler" in parent.stderr.readline()
    parent.kill()
    parent.wait()
    assert wait_gone({wrapper}, 5) == set(), "the wrapper outlived its parent"
    assert json.loads(status.read_text())["exit_code"] == 143


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


# --- readiness, files, health, versions -------------------------------------------------------


@pytest.fixture
def start_scheduler(reaper: list[int]):
    """Start a real `dask scheduler` on given ports (the caller picks them, to start it late)."""
    started: list[subprocess.Popen] = []

    def start(port: int, dashboard: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
            + ["--port", str(port), "--dashboard-address", f"127.0.0.1:{dashboard}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reaper.append(proc.pid)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def one_worker_cluster(tmp_path_factory):
    from daskstep.backends import ClusterSpec, get_backend

    backend = get_backend("local")
    backend.start(ClusterSpec(workers=1, threads=1, memory="256Mi"), tmp_path_factory.mktemp("c"))
    backend.wait_ready(1, timeout=60)
    yield backend.handle
    backend.stop()


@pytest.mark.integration
def test_a_late_scheduler_is_awaited(tmp_path: Path, start_scheduler) -> None:
    port, dashboard = free_port(), free_port()
    status = tmp_path / "status.json"
    wrapper = subprocess.Popen(
        [*ENTRYPOINT, "--scheduler", f"127.0.0.1:{port}", "--wait-timeout", "60"]
        + ["--status-file", str(status), "--", "sh", "-c", "echo uri=$DASK_SCHEDULER_URI"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    assert wrapper.poll() is None
    start_scheduler(port, dashboard)
    out, err = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 0, err
    assert out == f"uri=tcp://127.0.0.1:{port}\n"
    assert "waiting for scheduler" in err and "ready after" in err
    assert err.count("waiting for scheduler") == 1  # one line per state change
    assert json.loads(status.read_text())["scheduler"] == f"tcp://127.0.0.1:{port}"


@pytest.mark.integration
def test_too_few_workers_gives_75(tmp_path: Path, one_worker_cluster) -> None:
    status = tmp_path / "status.json"
    code = subprocess.call(
        [*ENTRYPOINT, "--scheduler", one_worker_cluster.scheduler_address, "--wait-workers", "2"]
        + ["--wait-timeout", "2", "--status-file", str(status), "--", "true"],
        stderr=subprocess.DEVNULL,
    )
    assert code == 75
    doc = json.loads(status.read_text())
    assert (doc["reason"], doc["workers"]) == ("TooFewWorkers", None)
    assert "only 1 of 2 workers" in doc["message"]


@pytest.mark.integration
def test_enough_workers_are_counted(tmp_path: Path, one_worker_cluster) -> None:
    status = tmp_path / "status.json"
    code = subprocess.call(
        [*ENTRYPOINT, "--scheduler", one_worker_cluster.scheduler_address, "--wait-workers", "1"]
        + ["--status-file", str(status), "--", "true"]
    )
    assert code == 0
    assert json.loads(status.read_text())["workers"] == 1


def test_wait_files_must_exist_and_not_be_empty(tmp_path: Path) -> None:
    ticket = tmp_path / "krb5cc"
    ticket.touch()
    wrapper = subprocess.Popen(
        [*ENTRYPOINT, "--wait-file", str(ticket), "--wait-timeout", "30", "--", "cat", str(ticket)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    assert wrapper.poll() is None  # an empty file is not ready
    ticket.write_text("ticket\n")
    out, _ = wrapper.communicate(timeout=30)
    assert (wrapper.returncode, out) == (0, "ticket\n")


def test_a_missing_wait_file_gives_69(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    code = subprocess.call(
        [*ENTRYPOINT, "--wait-file", str(tmp_path / "never"), "--wait-timeout", "1"]
        + ["--status-file", str(status), "--", "true"],
        stderr=subprocess.DEVNULL,
    )
    assert code == 69
    assert "never" in json.loads(status.read_text())["message"]


def test_health_endpoints_follow_readiness(tmp_path: Path, reaper: list[int]) -> None:
    port, gate = free_port(), tmp_path / "gate"
    wrapper = subprocess.Popen(
        [*ENTRYPOINT, "--health-port", str(port), "--health-host", "127.0.0.1"]
        + ["--wait-file", str(gate), "--", "sleep", "30"]
    )
    reaper.append(wrapper.pid)

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    wait_for(lambda: get("/healthz") == 200, 30, "the health server")
    assert get("/readyz") == 503
    gate.write_text("x")
    wait_for(lambda: get("/readyz") == 200, 30, "readiness")
    wrapper.terminate()
    assert wrapper.wait(timeout=30) == 143


# --- PID 1, groups, crashes -----------------------------------------------------------------

COUNT_ZOMBIES = (
    "import os\n"
    "stats = [open(f'/proc/{p}/stat').read() for p in os.listdir('/proc') if p.isdigit()]\n"
    "print('zombies', sum(s.rsplit(')', 1)[1].split()[0] == 'Z' for s in stats))\n"
)


@pytest.mark.integration
def test_as_pid_1_it_reaps_zombies(tmp_path: Path) -> None:
    probe = tmp_path / "zombies.py"
    probe.write_text(COUNT_ZOMBIES)
    orphans = f"(sleep 0.2 &); (sleep 0.2 &); sleep 1; {sys.executable} {probe}"
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    check = subprocess.run(unshare + ["true"], capture_output=True)
    require(check.returncode == 0, f"unshare --pid does not work here: {check.stderr!r}")
    out = subprocess.run(
        [*unshare, *ENTRYPOINT, "--", "sh", "-c", orphans], capture_output=True, text=True
    ).stdout
    assert out == "zombies 0\n"
    # The control: a PID 1 that only waits for its own child leaves both orphans as zombies.
    plain = [sys.executable, "-c", "import subprocess, sys; subprocess.call(sys.argv[1:])"]
    out = subprocess.run(
        [*unshare, *plain, "sh", "-c", orphans], capture_output=True, text=True
    ).stdout
    assert out == "zombies 2\n"


def test_sigterm_leaves_no_survivor_in_the_group(tmp_path: Path) -> None:
    """Even a grandchild that ignores SIGTERM is gone once the wrapper exits."""
    stubborn = tmp_path / "stubborn"
    started = tmp_path / "started"
    command = (
        f"sh -c 'trap \"\" TERM; echo $$ > {stubborn}; sleep 60' & "
        f"while [ ! -s {stubborn} ]; do sleep 0.05; done; touch {started}; wait"
    )
    wrapper = subprocess.Popen([*ENTRYPOINT, "--grace-period", "1", "--", "sh", "-c", command])
    wait_for(started.exists, 30, "the command to start")
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 143
    assert wait_gone({int(stubborn.read_text())}, 2) == set()


def test_the_status_is_written_when_the_wrapper_crashes(tmp_path: Path, monkeypatch) -> None:
    import entrypoint.__main__ as main_module

    def crash(self, commands, env):
        raise RuntimeError("the runner broke")

    monkeypatch.setattr(main_module.ProcessRunner, "run", crash)
    status = tmp_path / "status.json"
    assert main_module.main(["--status-file", str(status), "--", "true"]) == 70
    doc = json.loads(status.read_text())
    assert (doc["reason"], doc["exit_code"]) == ("Error", 70)
    assert "the runner broke" in doc["message"]


def test_the_termination_message_fits_in_1_kib(tmp_path: Path) -> None:
    from entrypoint.reporter import FileReporter

    log = tmp_path / "termination-log"
    status = Status("Error", 70, 0.0, 1.0, message="x" * 5000)
    FileReporter(None, str(log)).write(status)
    text = log.read_text()
    assert len(text.encode()) <= 1024
    assert json.loads(text)["exit_code"] == 70


def test_daskstep_entrypoint_runs_the_same_code_in_process() -> None:
    code = subprocess.call(
        [sys.executable, "-m", "daskstep", "entrypoint", "--", "sh", "-c", "exit 9"]
    )
    assert code == 9
    code = subprocess.call(  # options right after the command name reach the wrapper too
        [sys.executable, "-m", "daskstep", "entrypoint", "--scheduler", "127.0.0.1:9"]
        + ["--wait-timeout", "0.5", "--", "true"],
        stderr=subprocess.DEVNULL,
    )
    assert code == 69


# --- versions ---------------------------------------------------------------------------------


def versions(python: str = "3.11.7.final.0", **packages: str) -> dict:
    base = {"dask": "2026.8.0", "distributed": "2026.8.0", "msgpack": "1.1", "cloudpickle": "3.1"}
    return {"packages": {"python": python, **base, **packages}}


def test_versions_compare_python_by_minor_and_the_rest_exactly() -> None:
    from entrypoint.versions import compare, table

    same = compare(versions(), versions("3.11.2.final.0"), {"w1": versions()})
    assert same == []
    off = compare(
        versions(),
        versions(distributed="2023.3.2"),
        {"w1": versions(distributed="2023.3.2"), "w2": versions("3.9.2", msgpack="1.0")},
    )
    assert [m.package for m in off] == ["python", "distributed", "msgpack"]
    text = table(off)
    assert "2023.3.2" in text and "3.9" in text and "package" in text


def test_versions_fail_refuses_before_the_command_runs(monkeypatch) -> None:
    from entrypoint import versions as module

    mismatch = module.compare(versions(), versions(dask="2023.3.2"), {})
    monkeypatch.setattr(module, "collect", lambda uri, timeout: mismatch)
    runner, reporter, lines = FakeRunner(), FakeReporter(), []
    from entrypoint.__main__ import StepGate

    gate = StepGate(
        FakeWaiter(Readiness("tcp://x:1")), module.VersionCheck("fail", log=lines.append), None
    )
    assert Entrypointer(gate, runner, reporter).go([["true"]], {}) == 78
    assert runner.env is None
    assert reporter.written[0].reason == "VersionMismatch"
    assert any("version mismatch" in line for line in lines)
    warn = StepGate(
        FakeWaiter(Readiness("tcp://x:1")), module.VersionCheck("warn", log=lines.append), None
    )
    assert Entrypointer(warn, FakeRunner(), FakeReporter()).go([["true"]], {}) == 0


# -- `daskstep entrypoint` on the command line (issue 19) ----------------------------------------
DASKSTEP = [sys.executable, "-m", "daskstep"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_install_help_prints_usage_and_makes_nothing(tmp_path: Path, flag: str) -> None:
    """`daskstep entrypoint install --help` made a folder named --help."""
    done = subprocess.run(
        [*DASKSTEP, "entrypoint", "install", flag],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: daskstep entrypoint install [-h] DIR")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "the following arguments are required: DIR"),
        (["a", "b"], "unrecognized arguments: b"),
        (["file"], "cannot put entrypoint.pyz into file"),
    ],
)
def test_install_refuses_bad_folders_in_one_line(tmp_path: Path, args: list, says: str) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    done = subprocess.run(
        [*DASKSTEP, "entrypoint", "install", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: daskstep entrypoint install: ") and says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_install_puts_the_zipapp_into_the_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [*DASKSTEP, "entrypoint", "install", str(tmp_path / "bin")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "bin" / "entrypoint.pyz")
    assert (tmp_path / "bin" / "entrypoint.pyz").is_file()


def test_daskstep_entrypoint_help_mentions_install_and_the_zipapps_does_not(
    tmp_path: Path,
) -> None:
    from daskstep.pack import pack

    ours = subprocess.run(
        [*DASKSTEP, "entrypoint", "--help"], capture_output=True, text=True, timeout=60
    )
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.startswith("usage: daskstep entrypoint ")
    assert "daskstep entrypoint install DIR" in " ".join(ours.stdout.split())
    pyz = pack(tmp_path / "daskstep-entrypoint.pyz")
    theirs = subprocess.run(
        [sys.executable, "-I", str(pyz), "--help"], capture_output=True, text=True, timeout=60
    )
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout.startswith("usage: daskstep-entrypoint ")
    assert "install" not in theirs.stdout  # the zipapp knows nothing of daskstep
    ours_options = ours.stdout.split("options:")[1].split("daskstep entrypoint install")[0]
    assert ours_options.strip() == theirs.stdout.split("options:")[1].strip()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give the step as --shell CMD (repeatable) or as -- CMD..."),
        (["--no-such-flag", "--", "true"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_usage_error_is_one_error_line_and_64(args: list, says: str) -> None:
    """`daskstep entrypoint` with no arguments exited 64 with no `error:` prefix."""
    done = subprocess.run(
        [*DASKSTEP, "entrypoint", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 64
    [line] = done.stderr.splitlines()
    assert line.startswith("error: daskstep entrypoint: ") and says in line, line
    alone = subprocess.run([*ENTRYPOINT, *args], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 64
    [line] = alone.stderr.splitlines()
    assert line.startswith("error: daskstep-entrypoint: ") and says in line, line
