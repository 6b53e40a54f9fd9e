"""The run loop driven by fakes, as Tekton's entrypoint tests drive theirs: a fake backend, a
fake step launcher, a fake log shipper and fake credentials record what the loop asks of them.
Signals are the cancel event's own handler, called as a signal would call it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from daskstep import run as run_module
from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec
from daskstep.errors import ClusterError
from daskstep.record import Workspace
from daskstep.run import Run
from daskstep.seams import StepSpec
from daskstep.workflow.limits import load_limits
from daskstep.workflow.spec import check
from sidecar.lifecycle import StopSignal


class FakeBackend(ClusterBackend):
    name = "fake"
    scheduler_reachable = False  # no scheduler to watch, count or ask for its task stream

    def __init__(
        self,
        events: list[str],
        *,
        cancel_in_start: bool = False,
        dies_at: int = 0,
        refuses: str = "",
        stop_fails: str = "",
        refused: Exception | None = None,
    ):
        super().__init__()
        self.events = events
        self.refuses = refuses  # the start's failure, in the backend's own words
        self.stop_fails = stop_fails  # every stop's failure
        self.cancel_in_start = cancel_in_start
        self.refused = refused  # raised by start, as an engine's own error would be
        self.dies_at = dies_at  # the check_alive call that finds it dead (0: never)
        self.checks = 0

    def _start(self, spec: ClusterSpec, workspace: Path) -> ClusterHandle:
        self.events.append(f"cluster start {spec.workers}")
        if self.refused is not None:
            raise self.refused
        if self.cancel_in_start and self.cancel is not None:
            self.cancel.received(signal.SIGTERM)  # the user's Ctrl-C while it starts
        self.check_cancel()
        if self.refuses:
            raise ClusterError(self.refuses)
        return ClusterHandle("tcp://fake-scheduler:8786", None)

    def wait_ready(self, workers, timeout, progress=None, cancel=None) -> int:
        self.events.append("cluster ready")
        return workers

    def check_alive(self) -> None:
        self.checks += 1
        if self.dies_at and self.checks >= self.dies_at:
            raise ClusterError("the fake cluster stopped: its scheduler exited")

    def stop(self) -> None:
        self.events.append("cluster stop")
        if self.stop_fails:
            raise ClusterError(self.stop_fails)


class FakeStep:
    def __init__(self, launcher: FakeLauncher, spec: StepSpec, code: int | None) -> None:
        self.launcher = launcher
        self.spec = spec
        self.code = code  # None: runs until a signal ends it
        self.waits = 0

    def wait(self, timeout: float) -> int | None:
        self.waits += 1
        if self.waits == 2:  # the user's Ctrl-C (or more) while the step runs
            for signum in self.launcher.signals_mid_step:
                self.launcher.cancel.received(signum)
        return self.code

    def signal(self, signum: int) -> None:
        self.launcher.events.append(f"step {self.spec.name} got {signal.Signals(signum).name}")
        if signum == signal.SIGKILL or not self.launcher.traps_term:
            self.code = 128 + signum


class FakeLauncher:
    def __init__(self, events: list[str], codes: dict[str, int | None], cancel: StopSignal):
        self.events = events
        self.codes = codes
        self.cancel = cancel
        self.signals_mid_step: list[int] = []
        self.traps_term = False  # a step that ignores SIGTERM and SIGINT
        self.started: list[StepSpec] = []

    def start(self, step: StepSpec) -> FakeStep:
        self.events.append(f"step {step.name} start")
        self.started.append(step)
        return FakeStep(self, step, self.codes.get(step.name, 0))


class FakeLogs:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.sources: list[str] = []

    def start(self, sources) -> None:
        self.events.append("logs start")
        self.sources = list(sources)

    def stop(self) -> None:
        self.events.append("logs drain")


class FakeCredentials:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.folder = Path("/private")

    def variables(self) -> dict[str, str]:
        return {"kerberos": "KRB5CCNAME"}

    def start(self) -> None:
        self.events.append("credentials start")

    def wait_ready(self, timeout: float = 1, cancel=None) -> None:
        self.events.append("credentials ready")

    def environment(self) -> dict[str, str]:
        return {"KRB5CCNAME": "FILE:/private/krb5cc"}

    def step_environment(self) -> dict[str, str]:
        return {**self.environment(), "DASKSTEP_TLS_DIR": "/private/tls"}

    def files(self) -> list[Path]:
        return [Path("/private/krb5cc")]

    def stop(self) -> None:
        self.events.append("credentials stop")


def workflow(tmp_path: Path, steps: list[str]):
    document = {
        "workflow": {
            "type": "serial",
            "resources": {"dask": {"image": "docker.io/a/b:1", "number_of_workers": 3}},
            "specification": {"steps": [{"name": n, "commands": [f"run {n}"]} for n in steps]},
        }
    }
    wf, problems = check(document, load_limits(), tmp_path / "reana.yaml")
    assert wf is not None, problems
    return wf


def make_run(tmp_path, steps, codes=None, credentials=False, **backend_options):
    events: list[str] = []
    cancel = StopSignal()
    launcher = FakeLauncher(events, codes or {}, cancel)
    run = Run(
        workflow(tmp_path, steps),
        Workspace(tmp_path).new_run(),
        backend=FakeBackend(events, **backend_options),
        launcher=launcher,
        logs=FakeLogs(events),
        credentials=FakeCredentials(events) if credentials else None,
        cancel=cancel,
    )
    finish = run.status.finish

    def finish_and_record() -> None:
        finish()
        events.append("status final")

    run.status.finish = finish_and_record
    return run, events, launcher


def status(tmp_path: Path) -> dict:
    return json.loads((tmp_path / ".daskstep" / "status.json").read_text())


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "POLL_SECONDS", 0.001)
    monkeypatch.setattr(run_module, "ALIVE_CHECK_SECONDS", 0.0)


def test_steps_run_in_order_then_teardown_in_reverse(tmp_path: Path) -> None:
    run, events, launcher = make_run(tmp_path, ["one", "two"], credentials=True)
    assert run.execute() == 0
    assert events == [
        "logs start",
        "credentials start",
        "credentials ready",
        "cluster start 3",
        "cluster ready",
        "step one start",
        "step two start",
        "cluster stop",
        "credentials stop",
        "logs drain",
        "status final",
    ]
    step = launcher.started[0]
    assert step.scheduler == "tcp://fake-scheduler:8786" and step.commands == ("run one",)
    assert step.wait_files == (Path("/private/krb5cc"),) and step.versions == "warn"
    assert step.environment == {
        "KRB5CCNAME": "FILE:/private/krb5cc",
        "DASKSTEP_TLS_DIR": "/private/tls",
    }
    assert run.logs.sources == [f"job={tmp_path}/.daskstep/runs/1/raw/job.log*"]
    doc = status(tmp_path)
    assert doc["status"] == "finished" and doc["exit_code"] == 0
    assert [s["status"] for s in doc["steps"]] == ["finished", "finished"]


def test_a_failing_step_gives_its_code_and_skips_the_rest(tmp_path: Path) -> None:
    run, events, _ = make_run(tmp_path, ["one", "two", "three"], codes={"two": 3})
    assert run.execute() == 3
    assert "step three start" not in events
    assert events[-4:] == ["step two start", "cluster stop", "logs drain", "status final"]
    doc = status(tmp_path)
    assert doc["status"] == "failed" and doc["exit_code"] == 3
    assert [s["status"] for s in doc["steps"]] == ["finished", "failed", "skipped"]


def test_cancel_during_cluster_start_stops_it_and_runs_no_step(tmp_path: Path) -> None:
    run, events, launcher = make_run(tmp_path, ["one"], cancel_in_start=True)
    assert run.execute() == 128 + signal.SIGTERM
    assert launcher.started == []
    # the backend stops what it half-started, then the loop's teardown asks again (idempotent)
    assert events == [
        "logs start",
        "cluster start 3",
        "cluster stop",
        "cluster stop",
        "logs drain",
        "status final",
    ]
    doc = status(tmp_path)
    assert doc["status"] == "cancelled" and doc["exit_code"] == 143
    assert doc["steps"][0]["status"] == "skipped"


def test_cancel_during_a_step_is_passed_to_it(tmp_path: Path) -> None:
    run, events, launcher = make_run(tmp_path, ["one", "two"], codes={"one": None})
    launcher.signals_mid_step = [signal.SIGINT]
    assert run.execute() == 128 + signal.SIGINT
    assert "step one got SIGINT" in events and "step two start" not in events
    assert events[-3:] == ["cluster stop", "logs drain", "status final"]
    doc = status(tmp_path)
    assert doc["status"] == "cancelled" and doc["steps"][0]["status"] == "cancelled"


def test_a_second_signal_kills_a_step_that_ignores_the_first(tmp_path: Path) -> None:
    run, events, launcher = make_run(tmp_path, ["one"], codes={"one": None})
    launcher.signals_mid_step = [signal.SIGTERM, signal.SIGTERM]
    launcher.traps_term = True
    assert run.execute() == 143
    assert events.count("step one got SIGTERM") == 1
    assert events.index("step one got SIGTERM") < events.index("step one got SIGKILL")
    assert status(tmp_path)["steps"][0]["exit_code"] == 137


def test_a_cluster_dying_mid_step_stops_the_step_and_fails_the_run(tmp_path: Path) -> None:
    run, events, _ = make_run(tmp_path, ["one", "two"], codes={"one": None}, dies_at=3)
    assert run.execute() == 69
    assert "step one got SIGTERM" in events and "step two start" not in events
    assert events[-3:] == ["cluster stop", "logs drain", "status final"]
    doc = status(tmp_path)
    assert doc["status"] == "failed" and doc["exit_code"] == 69
    assert "its scheduler exited" in doc["message"]
    assert doc["steps"][0]["status"] == "failed" and doc["steps"][1]["status"] == "skipped"


def test_a_refused_start_says_its_cause_first_and_teardown_failures_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sbatch's words were lost behind scancel's, and status.json stayed `running`."""
    run, events, launcher = make_run(
        tmp_path, ["one"], refuses="sbatch: not configured", stop_fails="scancel: not configured"
    )
    assert run.execute() == 69
    assert launcher.started == [] and events[-2:] == ["logs drain", "status final"]
    lines = [line for line in capsys.readouterr().err.splitlines() if ": " in line]
    errors = [line for line in lines if line.startswith(("error:", "warning:"))]
    assert errors == [
        "error: sbatch: not configured",
        "warning: stopping the cluster: scancel: not configured",
    ]
    doc = status(tmp_path)
    assert (doc["status"], doc["exit_code"], doc["reason"]) == ("failed", 69, "ClusterFailed")
    assert doc["message"] == "sbatch: not configured" and doc["finished_at"]


def test_an_error_that_is_not_daskstep_s_own_is_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run, events, _ = make_run(tmp_path, ["one"])

    def broken(self, spec):
        raise KeyError("a library's own error")

    monkeypatch.setattr(FakeLauncher, "start", broken)
    assert run.execute() == 70
    assert events[-3:] == ["cluster stop", "logs drain", "status final"]
    doc = status(tmp_path)
    assert (doc["status"], doc["reason"]) == ("failed", "InternalError")
    assert doc["steps"][0]["status"] == "failed"
    assert "KeyError" in (tmp_path / ".daskstep" / "runs" / "1" / "error.log").read_text()
    assert "Traceback" not in capsys.readouterr().err


def test_signal_handlers_are_given_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    run, _, _ = make_run(tmp_path, ["one"])
    run.execute()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_error_that_is_not_dasksteps_own_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine's raw error out of the cluster's start (or a bug): the run fails with one
    error line, 70, tears down, and still writes status.json and the report; never
    "finished" with 0."""
    refused = RuntimeError("400 Client Error: Range of CPUs is from 0.01 to 2.00")
    run, events, launcher = make_run(tmp_path, ["one"], refused=refused)
    assert run.execute() == 70
    assert launcher.started == []
    assert events[-3:] == ["cluster stop", "logs drain", "status final"]
    doc = status(tmp_path)
    assert doc["status"] == "failed" and doc["exit_code"] == 70
    assert doc["message"] == "RuntimeError: 400 Client Error: Range of CPUs is from 0.01 to 2.00"
    assert doc["reason"] == "InternalError" and doc["steps"][0]["status"] == "skipped"
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    traceback = tmp_path / ".daskstep" / "runs" / "1" / "error.log"
    assert errors == [f"error: {doc['message']} (not daskstep's own error; its traceback: "
                      f"{traceback})"]  # fmt: skip
    assert "RuntimeError" in traceback.read_text()
    assert (tmp_path / ".daskstep" / "report.html").is_file()
