"""The batch backends (Slurm, HTCondor): the scheduler runs beside the controller, forked by the
local backend's launcher; each worker is one batch job, written and submitted by dask-jobqueue's
own Job class (daskstep/batch/systems.py).

All jobs are submitted at once, right after the scheduler listens. While the run lives, the
queue is asked once a second about the workers' jobs: one that the batch system ended
(`scancel`, `condor_rm`, the walltime, a node failure) is reported with its job id and the
system's reason. Teardown cancels every job carrying the run's id and waits until the queue
has let them go. If `daskstep run` is killed, its reaper cancels them at once; without the
reaper, the workers end by themselves `death_timeout` seconds after the scheduler went.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from daskstep.backends.base import (
    ClusterBackend,
    ClusterHandle,
    ClusterSpec,
    Progress,
)
from daskstep.backends.local import LocalBackend
from daskstep.backends.registry import Kind
from daskstep.batch.systems import BatchSystem, JobState, QueueWatch
from daskstep.errors import ClusterError, TooFewWorkers
from daskstep.progress import say
from daskstep.reaper import Reaper
from daskstep.record import RunFolder, new_run_id
from daskstep.scaling import SchedulerPool
from daskstep.words import plural
from sidecar.lifecycle import StopSignal

QUEUE_POLL_SECONDS = 1.0  # how often the queue is asked about the workers' jobs
QUEUE_DRAIN_SECONDS = 60.0  # how long teardown waits for cancelled jobs to leave the queue


class BatchBackend(ClusterBackend, SchedulerPool):
    poll_interval = 0.1
    own_scheduler = True  # the launcher's (cluster_side.py)

    def __init__(
        self,
        system: BatchSystem,
        run_id: str | None = None,
        reaper: bool = True,
        tls: Any = None,
    ) -> None:
        super().__init__(tls)
        self.name = system.name  # type: ignore[misc]
        self.system = system
        self.run_id = run_id or new_run_id()
        self.reaper = reaper
        self._reaper: Reaper | None = None
        site = system.site
        self.scheduler = LocalBackend(death_timeout=site.death_timeout, host=scheduler_host(system))
        self.scheduler_file: Path | None = None
        self.jobs: dict[str, str] = {}  # worker name -> job id
        self.retiring: set[str] = set()  # workers whose job ends for good (adaptive scaling)
        self.nodes: dict[str, str] = {}  # worker name -> the node its job runs on
        self.pool: set[str] = set()
        self._job_objects: dict[str, Any] = {}  # worker name -> dask-jobqueue's Job
        self._job: Any = None  # a worker's Job, by name
        self.ended: dict[str, JobState] = {}  # worker name -> how its job ended
        self._next_poll = 0.0
        self.queue = QueueWatch(system)
        self.submitted = False
        # Workers run the site's Python; without one, they run ours (dask-jobqueue's default)
        self.shares_step_environment = site.python is None  # type: ignore[misc]

    def _start(self, spec: ClusterSpec, run: RunFolder) -> ClusterHandle:
        """The worker jobs go in while the scheduler process starts (0.3 s): they find it
        through the scheduler file, written in the shared workspace once it listens."""
        if self.reaper:  # before the first job exists: from here on, a SIGKILL cannot leak it
            self._reaper = Reaper(f"--{self.system.name}", self.run_id)
        self.scheduler_file = (run.folder / "scheduler.json").resolve()
        self.scheduler_file.unlink(missing_ok=True)  # a dead run's would mislead the workers
        self.scheduler.scheduler_file = self.scheduler_file
        self.scheduler.cancel = self.cancel
        self.scheduler.tls = self.tls
        self.scheduler.launch(dataclasses.replace(spec, workers=0), run)
        logs = run.worker_logs
        logs.mkdir(parents=True, exist_ok=True)
        scheduler_file = shlex.quote(str(self.scheduler_file))
        security = self.tls.security("cluster") if self.tls else None

        def job(name: str) -> Any:
            return self.system.worker_job(
                f"--scheduler-file {scheduler_file}",
                name,
                self.run_id,
                spec.threads,
                spec.memory_bytes,
                (logs / f"{name}.log").resolve(),
                dict(spec.environment),
                security,
            )

        self._job = job
        jobs = {f"worker-{i}": job(f"worker-{i}") for i in range(spec.workers)}
        self.pool, self.next_worker = set(jobs), spec.workers
        self.submitted = True
        ids = asyncio.run(_submit_all(list(jobs.values())))
        self.jobs = dict(zip(jobs, ids, strict=True))
        self._job_objects = jobs
        return self.scheduler.await_scheduler()

    # -- adaptive scaling (scaling.py): a worker is a job ----------------------------------
    def add_worker(self, name: str) -> None:
        self.add_workers([name])

    def add_workers(self, names: list[str]) -> None:
        """At once, as at the start: a scale-up to 4 is four sbatch in flight, not in a row."""
        jobs = {name: self._job(name) for name in names}
        ids = asyncio.run(_submit_all(list(jobs.values())))
        self.jobs.update(zip(jobs, ids, strict=True))
        self._job_objects.update(jobs)

    def let_go(self, name: str, retiring: bool) -> None:
        """A retired worker's job ends as it should: no news."""
        (self.retiring.add if retiring else self.retiring.discard)(name)

    def cancel_worker(self, name: str) -> bool:
        job = self._job_objects.get(name)
        if job is None or name not in self.jobs:
            return False
        self.retiring.add(name)
        with contextlib.suppress(Exception):  # ended meanwhile: the same
            asyncio.run(job.close())  # scancel, condor_rm
        return True

    def wait_ready(
        self,
        workers: int,
        timeout: float,
        progress: Progress | None = None,
        cancel: StopSignal | None = None,
    ) -> int:
        """The scheduler's count; past the deadline, the queue says why the rest wait."""
        try:
            return super().wait_ready(workers, timeout, progress, cancel)
        except TooFewWorkers as e:
            waiting = self._waiting()
            raise TooFewWorkers(f"{e}; {waiting}" if waiting else str(e)) from None

    def _waiting(self) -> str:
        try:
            states = self.system.states(list(self.jobs.values()))
        except ClusterError:
            return ""
        names = {job_id: name for name, job_id in self.jobs.items()}
        parts = [
            f"{names[j]} (job {j}) is {s.state}" + (f": {s.reason}" if s.reason else "")
            for j, s in states.items()
            if s.state != "RUNNING"
        ]
        return "; ".join(parts)

    def check_alive(self) -> None:
        self.scheduler.check_alive()
        if not self.jobs or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + QUEUE_POLL_SECONDS
        watched = {
            name: j
            for name, j in self.jobs.items()
            if name not in self.ended and name not in self.retiring
        }
        if not watched:
            return
        states = self.queue.states(list(watched.values()))
        if states is None:
            return
        for name, job_id in watched.items():
            state = states[job_id]
            if state.node:
                self.nodes[name] = state.node
            if state.ended:
                self.ended[name] = state
                self._report(name, job_id, state)
                self.pool.discard(name)  # adaptive: no longer counted; another may replace it
        live = set(self.jobs) - self.retiring  # the jobs meant to run
        if live and live <= set(self.ended):
            raise ClusterError(
                f"every worker's {self.system.name} job ended; the last: {self._why(name)}"
            )

    def _why(self, name: str) -> str:
        state = self.ended[name]
        return f"{name} job {self.jobs[name]} {state.state}" + (
            f" ({state.reason})" if state.reason else ""
        )

    def _report(self, name: str, job_id: str, state: JobState) -> None:
        why = f"{self.system.name} says {state.state}"
        why += f": {state.reason}" if state.reason else ""
        why += f"; it ran on {self.nodes[name]}" if self.nodes.get(name) else ""
        self.report(name, f"its {self.system.name} job {job_id} ended", why)

    def log_sources(self, run: RunFolder) -> list[str]:
        return self.scheduler.log_sources(run)

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "run": self.run_id,
            "worker_jobs": dict(self.jobs),
            "ended_jobs": {n: dataclasses.asdict(s) for n, s in self.ended.items()},
        }

    def stop(self) -> None:
        """Cancel every job of the run, then the scheduler; wait until the queue let them go."""
        try:
            if self.submitted:
                self.system.cancel_run(self.run_id)
        finally:
            self.scheduler.stop()
        if self.submitted:
            self.submitted = False
            self._drain_queue()
        if self.scheduler_file is not None:
            self.scheduler_file.unlink(missing_ok=True)
        if self._reaper is not None:
            self._reaper.let_go()
            self._reaper = None

    def _drain_queue(self) -> None:
        deadline = time.monotonic() + QUEUE_DRAIN_SECONDS
        while left := self.system.queued(self.run_id):
            if time.monotonic() >= deadline:
                print(
                    f"warning: {plural(len(left), self.system.name + ' job')} of run "
                    f"{self.run_id} still leaving the queue after {QUEUE_DRAIN_SECONDS:g} s: "
                    + ", ".join(left),
                    file=sys.stderr,
                    flush=True,
                )
                return
            time.sleep(0.02)  # squeue answers in a few ms; jobs leave within ~0.1 s


def scheduler_host(system: BatchSystem) -> str:
    from daskstep.batch.address import scheduler_host as chosen

    return chosen(system, say)


async def _submit_all(jobs: list[Any]) -> list[str]:
    """Submit concurrently; a refused submission is a ClusterError in the system's words."""
    results = await asyncio.gather(*(job.start() for job in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            words = " ".join(str(result).split("stderr:")[-1].split())
            raise ClusterError(f"a worker job was refused: {words[:400]}")
    return [job.job_id for job in jobs]


class BatchKind(Kind):
    """The scheduler beside the controller, each worker a job of the batch system. Its extra
    (batch) is asked for with the steps' batch systems (wiring.batch_systems), in one line."""

    collects = True
    adapt_minimum = 0  # a batch worker holds a node: none while nothing waits (as REANA's)

    def cluster(self, run_id: str, tls: Any, systems: dict[str, Any]) -> ClusterBackend:
        return BatchBackend(systems[self.name], run_id=run_id, tls=tls)

    def shared_folder(self, systems: dict[str, Any]) -> str | None:
        return systems[self.name].site.shared_directory

    @classmethod
    def gc(cls, everything: bool) -> None:
        from daskstep.batch import system_for
        from daskstep.batch.site import Site

        system = system_for(cls.name, Site())
        runs = system.abandoned_runs(everything)
        for run_id in sorted(runs):
            jobs = system.queued(run_id)
            system.cancel_run(run_id)
            print(f"{run_id}: cancelled {plural(len(jobs), cls.name + ' job')}")
        if not runs:
            print("nothing to cancel")


class SlurmKind(BatchKind):
    name = batch_system = "slurm"


class HTCondorKind(BatchKind):
    name = batch_system = "htcondor"
