"""`daskstep run`: one loop over injected parts, as Tekton's entrypoint is one loop over a
Waiter, a Runner and a PostWriter.

The parts: a cluster backend (backends/), a step launcher and a log shipper (seams.py), and the
credential sidecars. The loop starts them in order, runs each step, and tears down in the
reverse order whatever happened: steps, cluster, credentials, log drain, final status.

A signal only sets the cancel event (no exception leaves a handler); the waits observe it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daskstep.backends import ClusterBackend, ClusterSpec
from daskstep.credentials import Credentials
from daskstep.errors import (
    Cancelled,
    ClusterError,
    DaskstepError,
    InternalError,
    SchedulerLost,
    described,
)
from daskstep.progress import StepProgress, WaitProgress, say
from daskstep.record import RunFolder, Workspace
from daskstep.report import RunRecorder, write_report_later
from daskstep.scaling import Adapt
from daskstep.seams import LogShipper, RunGuard, StepHandle, StepLauncher, StepSpec, placement
from daskstep.status import RunStatus
from daskstep.watch import SchedulerWatch
from daskstep.workflow.spec import Step, Workflow
from sidecar.lifecycle import StopSignal

POLL_SECONDS = 0.1  # how soon a cancel reaches a running step
ALIVE_CHECK_SECONDS = 1.0  # how often the cluster is asked whether it still lives, mid-step


def ended_words(code: int, cancelled: bool, failure: ClusterError | None) -> str:
    """How a step ended, in the job log's step marks and on the terminal: a step daskstep
    stopped is not a step that failed on its own."""
    if code == 0:
        return "finished"
    if cancelled:
        return f"cancelled (exit code {code})"
    if failure is not None:
        return f"stopped (exit code {code}): the cluster failed"
    return f"failed with exit code {code}"


class Run:
    def __init__(
        self,
        workflow: Workflow,
        record: RunFolder,
        *,
        backend: ClusterBackend | None,
        launcher: StepLauncher,
        logs: LogShipper,
        credentials: Credentials | None = None,
        cancel: StopSignal | None = None,
        start_timeout: float = 300.0,
        guard: RunGuard | None = None,
        adapt: Adapt | None = None,
    ) -> None:
        self.workflow = workflow
        self.record = record
        self.workspace = record.workspace
        self.backend = backend
        self.launcher = launcher
        self.logs = logs
        self.credentials = credentials
        self.cancel = cancel or StopSignal()
        self.start_timeout = start_timeout
        self.guard = guard  # marks the run failed if this process dies before it ends
        self.state = record.folder
        self.raw = record.raw  # what processes write; the log shipper fills the store
        self.status = RunStatus(record.status_file, workflow, backend, record.number)
        self.watch: SchedulerWatch | None = None
        self.adapt = adapt  # the workers follow the work, between these two numbers
        self.autoscaler: Any = None  # daskstep.adaptive.Autoscaler, once the cluster is up
        self.recorder = RunRecorder()  # the workers' memory and CPU, for the report
        self.task_stream: list[dict] = []
        self.cluster_failed = False  # then its scheduler is not asked again on the way out

    def execute(self) -> int:
        self.cancel.install((signal.SIGINT, signal.SIGTERM))
        try:
            return self._execute()
        finally:
            self.cancel.uninstall()

    def _execute(self) -> int:
        self.record.worker_logs.mkdir(parents=True, exist_ok=True)
        if self.guard is not None:
            self.guard.start()
        self.status.begin()
        if self.record.number is not None:  # .daskstep/status.json, logs, ... name this run
            Workspace(self.workspace).point_latest(self.record)
        try:
            self._start_logs()
            if self.credentials is not None and self.credentials.variables():
                self._start_credentials(self.credentials)
            scheduler = self._start_cluster(self.backend) if self.backend is not None else None
            for index, step in enumerate(self.workflow.steps):
                if self._run_step(index, step, scheduler) != 0:
                    break
            if self.workflow.type != "serial":
                self._run_engine(scheduler)
        except Cancelled:
            pass
        except DaskstepError as e:
            self._fail(e)
        except Exception as e:  # not daskstep's own (a library's, a bug): still a failed run
            self._fail(InternalError(described(e)), traceback.format_exc())
        finally:
            self._teardown()
        self._write_report()
        self._report_outputs()
        if self.guard is not None:
            self.guard.let_go()  # the run is recorded: nothing left for it to mark
        return self.status.exit_code

    def _fail(self, e: DaskstepError, details: str = "") -> None:
        """The run's failure: first on the terminal, in status.json with its reason; what
        goes wrong in teardown afterwards is only a warning."""
        self.status.fail(str(e), e.exit_code, e.reason)
        self.cluster_failed = isinstance(e, ClusterError)
        if isinstance(e, SchedulerLost):  # one event too, like the workers' losses
            self.status.event("scheduler", "lost", str(e))
            self._job_log(f"daskstep: error: {e}")
        if details:
            where = self.state / "error.log"
            with contextlib.suppress(OSError):
                where.write_text(details)
            say(f"error: {e} (not daskstep's own error; its traceback: {where})")
        else:
            say(f"error: {e}")

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(self.cancel.signum or signal.SIGTERM)

    # -- the parts, in order ---------------------------------------------------------------------
    def _start_logs(self) -> None:
        sources = [f"job={self.raw / 'job.log*'}"]
        if self.workflow.type != "serial":  # cwltool's or snakemake's own output
            sources.append(f"engine={self.raw / 'engine.log*'}")
        if self.backend is not None:
            sources += self.backend.log_sources(self.record)
        self.logs.start(sources)
        self._check_cancel()

    def _start_credentials(self, credentials: Credentials) -> None:
        """Before the cluster: a credential that cannot be had fails the run in seconds."""
        kinds = credentials.variables()
        say(f"starting the {' and '.join(kinds)} sidecar{'s' if len(kinds) > 1 else ''}")
        t = time.monotonic()
        credentials.start()
        self._check_cancel()
        credentials.wait_ready(cancel=self.cancel)
        seconds = time.monotonic() - t
        self.status.credentials_ready(kinds, seconds)
        given = ", ".join(f"{k}={v}" for k, v in credentials.environment().items())
        say(f"credentials ready in {seconds:.1f} s: {given}")

    def _start_cluster(self, backend: ClusterBackend) -> str:
        assert self.workflow.dask is not None
        environment = self.credentials.environment() if self.credentials else {}
        folders = (self.credentials.folder,) if self.credentials else ()
        spec = ClusterSpec.from_dask(self.workflow.dask, environment, folders)
        if self.adapt is not None:  # it starts with the fewest and grows with the work
            spec = dataclasses.replace(spec, workers=self.adapt.minimum, adaptive=True)
        t = time.monotonic()
        handle = backend.start(spec, self.record, cancel=self.cancel, watcher=self._cluster_event)
        self.status.cluster_started(handle)
        self._check_cancel()
        with WaitProgress("waiting for workers", spec.workers) as progress:
            ready = backend.wait_ready(
                spec.workers, self.start_timeout, progress.update, cancel=self.cancel
            )
        self.status.cluster_details(backend.status())
        self.status.cluster_ready(ready, time.monotonic() - t)
        say(
            f"cluster ready in {time.monotonic() - t:.1f} s: {ready} worker{'s' * (ready != 1)}, "
            f"scheduler {handle.scheduler_address}"
        )
        if handle.dashboard_url:
            say(f"dashboard: {handle.dashboard_url}")
        if backend.scheduler_reachable:
            self.watch = SchedulerWatch(self._identity, spec.workers, self._cluster_event)
            self._ask_task_stream()  # installs the scheduler's recorder of what ran where
        if self.adapt is not None and not backend.scales_itself:
            from daskstep.adaptive import Autoscaler

            pool: Any = backend  # a backend daskstep starts itself: a SchedulerPool
            self.autoscaler = Autoscaler(pool, self.adapt, self._cluster_event)
        return handle.scheduler_address

    def _identity(self) -> dict:
        """The scheduler's identity for the watch, sampled for the report on the way."""
        assert self.backend is not None
        identity = self.backend.identity()
        self.recorder.sample(identity)
        return identity

    def _ask_task_stream(self) -> None:
        """What ran where and when, for the report; a scheduler that cannot say (another
        distributed version in a container) leaves the report without a task stream."""
        assert self.backend is not None
        with contextlib.suppress(Exception):  # a run shorter than the watch's period too
            self._identity()  # a sample, which names the workers
        try:
            self.task_stream = self.backend.task_stream(start=self.status.started)
        except Exception as e:
            say(f"warning: no task stream for the report: {type(e).__name__}: {e}")

    def _cluster_event(self, component: str, what: str, why: str) -> None:
        """From a backend's watcher: on the terminal, in the job log and in status.json."""
        line = f"warning: {component}: {what}: {why}"
        say(line)
        self._job_log(f"daskstep: {line}")
        self.status.event(component, what, why)

    def _job_log(self, line: str) -> None:
        with open(self.raw / "job.log", "ab") as job_log:
            job_log.write(f"{line}\n".encode())

    def _run_step(self, index: int, step: Step, scheduler: str | None) -> int:
        self._check_cancel()
        spec = self._spec(
            index,
            step.name,
            step.commands,
            self.record.step_status(index, step.name),
            scheduler,
            image=step.environment,
            compute_backend=step.compute_backend,
            batch_options=step.batch_options,
        )
        started = f"step {step.name} ({index + 1}/{len(self.workflow.steps)}) started"
        say(started)
        self._job_log(f"daskstep: {started}")  # where the step's lines begin (daskstep test)
        self.status.step_started(index)
        if self.autoscaler is not None:
            self.autoscaler.step_started()  # its graph is on its way: no scale-down yet
        with self._progress(step.name, index, len(self.workflow.steps)) as tasks:
            handle = self.launcher.start(spec)
            if where := placement(handle):
                self.status.step_placed(index, where)
                say(f"step {step.name} is " + ", ".join(f"{k} {v}" for k, v in where.items()))
            code, failure = self._follow(handle, tasks)
            tasks.ended(code, self.cancel.is_set())
        if failure is not None:
            self.status.fail(str(failure), failure.exit_code, failure.reason)
        self.status.step_finished(index, code, spec.status_file, self.cancel.is_set())
        ended = f"step {step.name} {ended_words(code, self.cancel.is_set(), failure)}"
        say(ended)
        self._job_log(f"daskstep: {ended}")  # and where they end
        if failure is not None:
            raise failure
        self._check_cancel()
        return code

    def _run_engine(self, scheduler: str | None) -> None:
        """A cwl or snakemake workflow: the engine is one step, its output the engine log; the
        tools it starts run under the entrypoint and become status.json's steps as they run
        (daskstep/engines/engine_step.py), the first failing one's exit code the run's."""
        from daskstep.engines.engine_step import EngineStep

        self._check_cancel()
        engine = EngineStep(self.workflow, self.record, self.status, say)
        spec = self._spec(
            0,
            engine.name,
            engine.commands(),
            engine.status_file,
            scheduler,
            environment=engine.environment(self._versions()),
        )
        say(f"{engine.name} started: {self.workflow.file}")
        with self._progress(engine.name, 0, 1) as tasks, engine.tool_output():
            handle = engine.follow(self.launcher.start(spec))
            code, failure = self._follow(handle, tasks)
            tasks.ended(code, self.cancel.is_set())
        engine.finished(code, self.cancel.is_set())
        say(f"{engine.name} {ended_words(code, self.cancel.is_set(), failure)}")
        if failure is not None:
            raise failure
        self._check_cancel()

    def _spec(
        self,
        index: int,
        name: str,
        commands: Sequence[str],
        status_file: Path,
        scheduler: str | None,
        environment: dict[str, str] | None = None,
        **more: Any,
    ) -> StepSpec:
        """What every step is given: the scheduler, the credentials to wait for and to find,
        and whether its Dask is compared with the workers'."""
        credentials = self.credentials.step_environment() if self.credentials else {}
        return StepSpec(
            index=index,
            name=name,
            commands=tuple(commands),
            status_file=status_file,
            scheduler=scheduler,
            wait_files=tuple(self.credentials.files()) if self.credentials else (),
            environment={**credentials, **(environment or {})},
            versions=self._versions(),
            **more,
        )

    def _versions(self) -> str:
        """Steps that share the workers' Python cannot differ from them (0.6 s a step)."""
        return "off" if self.backend and self.backend.shares_step_environment else "warn"

    def _progress(self, name: str, index: int, steps: int) -> StepProgress:
        """The step's tasks, live, as the scheduler counts them (when daskstep can reach it)."""
        backend = self.backend
        counts = backend.task_counts if backend and backend.scheduler_reachable else None
        return StepProgress(name, index, steps, counts)

    def _follow(
        self, handle: StepHandle, tasks: StepProgress | None = None
    ) -> tuple[int, ClusterError | None]:
        """Wait for the step. A cancel is passed on (a second signal kills it); a cluster that
        dies meanwhile stops it, instead of leaving it to hang on a scheduler that is gone. The
        step's tasks are asked for beside (in a thread of their own: never a failure)."""
        forwarded = 0  # signals passed on to the step: the cancel's, then KILL
        failure: ClusterError | None = None
        next_check = time.monotonic() + ALIVE_CHECK_SECONDS
        while (code := handle.wait(POLL_SECONDS)) is None:
            if self.cancel.is_set() and forwarded == 0:
                handle.signal(self.cancel.signum or signal.SIGTERM)
                forwarded = 1
            if self.cancel.signals > 1 and forwarded == 1:  # the user insists
                handle.signal(signal.SIGKILL)
                forwarded = 2
            if failure is None and self.backend is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + ALIVE_CHECK_SECONDS
                try:
                    self.backend.check_alive()
                    if self.watch is not None:
                        self.watch.poll()
                    if self.autoscaler is not None:
                        self.autoscaler.look()
                except ClusterError as e:
                    failure = e
                    say("the cluster failed; stopping the step (the error follows)")
                    handle.signal(signal.SIGTERM)
                if tasks is not None:
                    tasks.poll()  # never raises: a count that fails is no failure of the step
        return code, failure

    # -- teardown, whatever happened -------------------------------------------------------------
    def _teardown(self) -> None:
        """Steps have ended by now; then the cluster, the credentials, the log drain (the
        cluster's stopped containers are removed only after it), and the final status. A signal
        meanwhile only sets the cancel event: teardown goes on. A part that fails is a warning:
        the parts after it still run, and the run's status is written whatever happens."""
        parts: list[tuple[str, Callable[[], object]]] = []
        if self.backend is not None:
            parts.append(("stopping the cluster", self._stop_cluster))
        if self.credentials is not None:
            parts.append(("stopping the credential sidecars", self.credentials.stop))
        parts.append(("draining the logs", self.logs.stop))
        if self.backend is not None:
            parts.append(("removing the cluster", self.backend.release))
        try:
            for what, part in parts:
                try:
                    part()
                except Exception as e:
                    say(f"warning: {what}: {e}")
            if self.cancel.is_set():
                signum = self.cancel.signum or signal.SIGTERM
                self.status.cancel(signum)
                say(f"cancelled by {signal.Signals(signum).name}; the cluster is stopped")
        finally:
            self.status.finish()

    def _stop_cluster(self) -> None:
        assert self.backend is not None
        if self.watch is not None and not self.cluster_failed:  # what ran, before it goes
            self._ask_task_stream()
        t = time.monotonic()
        with contextlib.suppress(Exception):  # the scheduler's words are for the report only
            self.status.cluster_details(self.backend.status())
        try:
            self.backend.stop()
        finally:
            self.status.cluster_stopped(time.monotonic() - t)

    def _write_report(self) -> None:
        """After every run, failed ones too, drawn by a process of its own: the prompt does
        not wait for it. A report that cannot be drawn is one warning, never the run's
        failure."""
        try:
            html = write_report_later(
                self.state, self.status.document(), self.task_stream, self.recorder
            )
            say(f"report: {html}")
        except Exception as e:
            say(f"warning: the report could not be written: {type(e).__name__}: {e}")

    def _report_outputs(self) -> None:
        if self.status.exit_code != 0:
            return
        for name in (*self.workflow.output_files, *self.workflow.output_directories):
            path = self.workspace / name
            if path.exists():
                say(f"output: {path}")
            else:
                say(f"warning: declared output '{name}' was not produced")
