"""`daskstep run`: start the cluster, wait until it is usable, run each step through the
entrypoint, and tear the cluster down whatever happens."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from daskstep.backends import ClusterBackend, ClusterSpec, get_backend
from daskstep.credentials import Credentials, Secrets, forget_secret_variables, strip_secrets
from daskstep.errors import DaskstepError, InputError, Problem
from daskstep.progress import WaitProgress
from daskstep.secret_env import handed_over
from daskstep.spec import Step, Workflow
from daskstep.status import RunStatus

STEP_GRACE_SECONDS = 10.0
LOG_DRAIN_TIMEOUT = 60.0


class Cancelled(BaseException):
    """Raised from the signal handler when no step is running to receive the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def child_env() -> dict[str, str]:
    """Children that must not outlive us learn our pid: if we die before they can ask the kernel
    to tell them (PR_SET_PDEATHSIG), they still notice that their parent changed."""
    env = strip_secrets(os.environ)
    env["DASKSTEP_PARENT_PID"] = str(os.getpid())
    return env


def say(message: str) -> None:
    print(f"daskstep: {message}", file=sys.stderr, flush=True)


def prepare_workspace(workspace: Path) -> Path:
    """The folder the run writes into, made if missing; a bad one is the user's input error."""
    if workspace.exists() and not workspace.is_dir():
        message = f"{workspace} is a file, not a folder; give a folder (it is made if missing)"
        raise InputError([Problem("--workspace", message)])
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        message = f"{workspace} cannot be made ({e.strerror}); give a folder you can write to"
        raise InputError([Problem("--workspace", message)]) from None
    return workspace.resolve()


def _inputs(workflow: Workflow) -> list[tuple[str, str]]:
    """(field, name) of every declared input, e.g. ("inputs.files[0]", "analysis.py")."""
    kinds = (("files", workflow.input_files), ("directories", workflow.input_directories))
    return [(f"inputs.{k}[{i}]", name) for k, names in kinds for i, name in enumerate(names)]


def check_inputs(workflow: Workflow) -> None:
    """Every declared input must exist beside the reana.yaml, as REANA's upload demands."""
    source = workflow.path.parent.resolve()
    problems = [
        Problem(field, f"{name!r} does not exist in {source}; add it there, or remove it here")
        for field, name in _inputs(workflow)
        if not (source / name).exists()
    ]
    if problems:
        raise InputError(problems, source=str(workflow.path))


def stage_inputs(workflow: Workflow, workspace: Path) -> None:
    """Copy `inputs` into a separate workspace, as REANA does; nothing to do in place."""
    source = workflow.path.parent.resolve()
    if workspace.resolve() == source:
        return
    for _field, name in _inputs(workflow):
        src, dst = source / name, workspace / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


class StepProcess:
    """One step run through the entrypoint, with its output sent to the terminal and job.log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, job_log: BinaryIO) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signal handler is the only one that forwards to it
        )
        self._tee = threading.Thread(target=self._copy, args=(job_log,), daemon=True)
        self._tee.start()

    def _copy(self, job_log: BinaryIO) -> None:
        assert self.proc.stdout is not None
        out = sys.stdout.buffer
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            job_log.write(chunk)
            job_log.flush()
            with contextlib.suppress(OSError, ValueError):
                out.write(chunk)
                out.flush()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def wait(self) -> int:
        code = self.proc.wait()
        self._tee.join(timeout=5)
        return 128 - code if code < 0 else code


class Run:
    def __init__(
        self,
        workflow: Workflow,
        backend: ClusterBackend | None,
        workspace: Path,
        start_timeout: float,
        credentials: Credentials | None = None,
    ) -> None:
        self.workflow = workflow
        self.backend = backend
        self.credentials = credentials
        self.workspace = workspace.resolve()
        self.start_timeout = start_timeout
        self.state = self.workspace / ".daskstep"
        self.raw = self.state / "raw"  # what processes write; the log sidecar fills the store
        self.log_sidecar: subprocess.Popen[bytes] | None = None
        self.status = RunStatus(self.state / "status.json", workflow, backend)
        self.step: StepProcess | None = None
        self.cancelled: int | None = None
        self.tearing_down = False
        self.spawning = False

    def _on_signal(self, signum: int, frame: object) -> None:
        first = self.cancelled is None
        self.cancelled = self.cancelled or signum
        if self.step is not None and self.step.proc.poll() is None:
            # The entrypoint forwards to the step's group; a second signal does not wait.
            self.step.signal(signum if first else signal.SIGKILL)
            return
        if first and not self.tearing_down and not self.spawning:
            raise Cancelled(signum)

    @contextlib.contextmanager
    def _spawning(self) -> Iterator[None]:
        """A cancel arriving while a child is spawned and recorded is acted on after both, so
        no child is left that nobody knows about. (Blocking the signals instead would leave them
        blocked in the child, which inherits the mask.)"""
        self.spawning = True
        try:
            yield
        finally:
            self.spawning = False

    def execute(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._execute()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def _execute(self) -> int:
        (self.raw / "workers").mkdir(parents=True, exist_ok=True)
        self.status.begin()
        scheduler = None
        try:
            self._start_log_sidecar()
            if self.credentials is not None:
                self._start_credentials(self.credentials)
            if self.backend is not None and self.workflow.dask is not None:
                scheduler = self._start_cluster()
            for index, step in enumerate(self.workflow.steps):
                code = self._run_step(index, step, scheduler)
                if self.cancelled or code != 0:
                    break
        except Cancelled:
            pass
        except DaskstepError as e:
            self.status.fail(str(e), e.exit_code)
            say(f"error: {e}")
        finally:
            self.tearing_down = True
            if self.backend is not None:
                t = time.monotonic()
                self.backend.stop()
                self.status.cluster["stop_seconds"] = round(time.monotonic() - t, 3)
            if self.credentials is not None:
                self.credentials.stop()
            self._stop_log_sidecar()
            if self.cancelled:
                self.status.cancel(self.cancelled)
                say(f"cancelled by {signal.Signals(self.cancelled).name}; the cluster is stopped")
            self.status.finish()
        self._report_outputs()
        return self.status.exit_code

    def _start_log_sidecar(self) -> None:
        sources = {"job": str(self.raw / "job.log*")}
        if self.backend is not None:
            sources.update(self.backend.log_sources(self.workspace))
        argv = [
            sys.executable,
            "-m",
            "daskstep",
            "sidecar",
            "logs",
            "--workspace",
            str(self.workspace),
        ]
        for component, pattern in sources.items():
            argv += ["--source", f"{component}={pattern}"]

        def start() -> None:
            with open(self.state / "sidecar.log", "ab") as log:
                self.log_sidecar = subprocess.Popen(
                    argv,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )

        self._spawn(start)

    def _spawn(self, start: Callable[[], None]) -> None:
        """Start a child; a cancel that arrived meanwhile is acted on once it is recorded."""
        with self._spawning():
            start()
        if self.cancelled:
            raise Cancelled(self.cancelled)

    def _start_credentials(self, credentials: Credentials) -> None:
        """Before the cluster: a credential that cannot be had fails the run in seconds."""
        kinds = " and ".join(s.kind for s in credentials.sidecars)
        say(f"starting the {kinds} sidecar{'s' if ' and ' in kinds else ''}")
        t = time.monotonic()
        credentials.start(self._spawn, child_env())
        credentials.wait_ready()
        seconds = time.monotonic() - t
        self.status.credentials_ready({s.kind: s.variable for s in credentials.sidecars}, seconds)
        given = ", ".join(f"{k}={v}" for k, v in credentials.environment().items())
        say(f"credentials ready in {seconds:.1f} s: {given}")

    def _stop_log_sidecar(self) -> None:
        """After everything else stopped: the sidecar drains what is left, then exits."""
        sidecar, self.log_sidecar = self.log_sidecar, None
        if sidecar is None:
            return
        sidecar.terminate()
        try:
            sidecar.wait(timeout=LOG_DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"warning: the log sidecar did not drain within {LOG_DRAIN_TIMEOUT:g} s")
            sidecar.kill()
            sidecar.wait()

    def _start_cluster(self) -> str:
        assert self.backend is not None and self.workflow.dask is not None
        environment = self.credentials.environment() if self.credentials else {}
        spec = ClusterSpec.from_dask(self.workflow.dask, environment)
        t = time.monotonic()
        handle = self.backend.start(spec, self.workspace)
        self.status.cluster_started(handle)
        with WaitProgress("waiting for workers", spec.workers) as progress:
            ready = self.backend.wait_ready(spec.workers, self.start_timeout, progress.update)
        self.status.cluster_ready(ready, time.monotonic() - t)
        say(
            f"cluster ready in {time.monotonic() - t:.1f} s: {ready} workers, "
            f"scheduler {handle.scheduler_address}"
        )
        if handle.dashboard_url:
            say(f"dashboard: {handle.dashboard_url}")
        return handle.scheduler_address

    def _run_step(self, index: int, step: Step, scheduler: str | None) -> int:
        status_file = self.state / "steps" / f"{index + 1:02d}-{step.name}.json"
        argv = [sys.executable, "-m", "entrypoint", "--status-file", str(status_file)]
        argv += ["--die-with-parent", "--grace-period", str(STEP_GRACE_SECONDS)]
        if scheduler:
            argv += ["--scheduler", scheduler]
        if self.backend is not None and self.backend.shares_step_environment:
            argv += ["--versions", "off"]
        for path in self.credentials.files() if self.credentials else ():
            argv += ["--wait-file", str(path)]
        for command in step.commands:
            argv += ["--shell", command]
        say(f"step {step.name} ({index + 1}/{len(self.workflow.steps)}) started")
        self.status.step_started(index)
        with open(self.raw / "job.log", "ab") as job_log:
            with self._spawning():
                self.step = StepProcess(argv, self._step_env(), self.workspace, job_log)
            if self.cancelled:
                self.step.signal(self.cancelled)
            try:
                code = self.step.wait()
            finally:
                self.step = None
        self.status.step_finished(index, code, status_file, cancelled=bool(self.cancelled))
        word = "finished" if code == 0 else f"failed with exit code {code}"
        say(f"step {step.name} {word}")
        return code

    def _step_env(self) -> dict[str, str]:
        """The step sees daskstep's own Python first, so `python` has the workers' Dask."""
        env = child_env()
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"  # live job logs
        env["DASKSTEP_WORKSPACE"] = str(self.workspace)
        if self.credentials is not None:
            env.update(self.credentials.environment())
        return env

    def _report_outputs(self) -> None:
        if self.status.exit_code != 0:
            return
        for name in (*self.workflow.output_files, *self.workflow.output_directories):
            path = self.workspace / name
            if path.exists():
                say(f"output: {path}")
            else:
                say(f"warning: declared output '{name}' was not produced")


def prepare_run(
    workflow: Workflow,
    backend: str,
    workspace: Path,
    start_timeout: float = 300.0,
    secrets: str | None = None,
) -> Run:
    """The input stage: everything that can fail on the user's input fails here, before
    anything starts."""
    check_inputs(workflow)
    cluster = get_backend(backend) if workflow.dask is not None else None
    found = Secrets.locate(secrets, {**os.environ, **handed_over()})
    forget_secret_variables()
    workspace = prepare_workspace(workspace)
    credentials = Credentials.for_run(
        workflow.needs_kerberos,
        workflow.needs_voms_proxy,
        found,
        logs=workspace / ".daskstep" / "sidecars",
    )
    try:
        stage_inputs(workflow, workspace)
    except BaseException:
        if credentials is not None:
            credentials.stop()  # nothing started yet: this removes the private folder
        raise
    if cluster is None:
        say("the workflow asks for no Dask cluster; running the steps without one")
    return Run(workflow, cluster, workspace, start_timeout, credentials)
