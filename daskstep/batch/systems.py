"""The batch systems, each behind one small interface: a worker job (dask-jobqueue's own Job
class, so its templates and its `jobqueue.*` configuration apply), a step job, the queue's view
of a run's jobs, and cancelling a whole run.

Every job of a run carries the run id (Slurm: the job name; HTCondor: `DaskstepRun`) and the
controller's host:pid (Slurm: the comment; HTCondor: `DaskstepController`), so that teardown,
the reaper and `daskstep gc` find them all, whoever submitted them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dask.config

from daskstep.batch import jobqueue
from daskstep.batch.site import Site
from daskstep.errors import ClusterError
from daskstep.procutil import controller_alive, controller_mark
from daskstep.progress import say
from daskstep.secret_env import child_env


@dataclass(frozen=True)
class JobState:
    state: str  # the system's own word: RUNNING, CANCELLED, TIMEOUT, Removed, Held, GONE, ...
    reason: str = ""
    exit_code: int | None = None
    node: str = ""  # where it runs (or ran), when the system says

    @property
    def ended(self) -> bool:
        return self.state in ENDED


ENDED = {
    # Slurm (squeue -t all)
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
    # HTCondor (JobStatus 3 and 4; a held job does not run, for us it ended)
    "Removed", "Completed", "Held",
    # no longer known to the queue
    "GONE",
}  # fmt: skip


COMMENT = "daskstep-controller="  # a Slurm job's comment: no spaces (#SBATCH lines split there)


def run_command(argv: list[str], what: str) -> str:
    """One batch command; a failure is a ClusterError carrying the command's own words."""
    try:
        done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ClusterError(
            f"{what}: {argv[0]} is not on PATH; run daskstep where the batch system's commands "
            "are (a submit node), or add them to PATH"
        ) from None
    except OSError as e:
        raise ClusterError(f"{what}: {argv[0]} could not start: {e.strerror or e}") from None
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{what}: {argv[0]} did not answer within {e.timeout:g} s") from None
    if done.returncode != 0:
        words = " ".join((done.stderr or done.stdout).split())[:300]
        raise ClusterError(f"{what}: {argv[0]} exited {done.returncode}: {words}")
    return done.stdout


class BatchSystem(ABC):
    name: ClassVar[str]
    compute_backend: ClassVar[str]  # REANA's word for a step placed on this system
    submit: ClassVar[str]  # the command whose presence says the system is reachable
    controller_name: ClassVar[str]  # what the worker jobs' nodes and this host both reach

    def __init__(self, site: Site) -> None:
        self.site = site

    def controller(self) -> tuple[str, int] | None:
        """(host, port) of the batch system's controller, as its configuration says; None
        if it cannot be told."""
        return None

    @abstractmethod
    def worker_job(
        self, scheduler: str, name: str, run_id: str, threads: int, memory: int, log: Path,
        environment: dict[str, str], security: Any = None,
    ) -> Any:  # fmt: skip
        """dask-jobqueue's Job for one worker; `await job.start()` submits it. `scheduler` is
        the worker's argument for it: an address, or `--scheduler-file PATH`. `security`: the
        cluster's side of the run's TLS, its files where the batch nodes see them."""

    @abstractmethod
    def submit_step(
        self, argv: list[str], name: str, run_id: str, output: Path, workdir: Path,
        options: dict[str, Any],
    ) -> str:  # fmt: skip
        """Submit one step's entrypoint as a job; return its job id."""

    @abstractmethod
    def states(self, job_ids: list[str]) -> dict[str, JobState]: ...

    @abstractmethod
    def exit_code(self, job_id: str) -> int | None:
        """An ended job's exit code as the system recorded it (128+N for signal N)."""

    @abstractmethod
    def queued(self, run_id: str) -> list[str]:
        """The run's jobs still in the queue (pending, running or being killed)."""

    @abstractmethod
    def cancel_run(self, run_id: str) -> None: ...

    @abstractmethod
    def signal(self, job_id: str, signum: int) -> None: ...

    @abstractmethod
    def abandoned_runs(self, everything: bool = False) -> set[str]:
        """Runs whose controller on this host is gone (or every run)."""

    def _common(
        self,
        threads: int,
        memory: int,
        name: str,
        environment: dict[str, str],
        security: Any = None,
    ) -> dict:
        prologue = list(dask.config.get(f"jobqueue.{self.name}.job-script-prologue", []) or [])
        prologue += list(self.site.prologue)
        prologue += [f"export {k}={shlex.quote(v)}" for k, v in environment.items()]
        return {
            "name": name,
            "cores": threads,
            "memory": f"{memory}B",
            "processes": 1,
            "death_timeout": self.site.death_timeout,
            "python": self.site.python,  # None: the Job class reads jobqueue.<name>.python
            "job_script_prologue": ["exec 2>&1", *prologue],  # one log file per worker
            "security": security,  # the run's TLS: the Job adds --tls-* to the worker
        }

    def _extra(self) -> list[Any]:
        return list(dask.config.get(f"jobqueue.{self.name}.job-extra-directives", []) or [])


def abandoned(marks: dict[str, str], everything: bool) -> set[str]:
    """run id -> controller mark: the runs whose controller on this host is gone."""
    return {run for run, mark in marks.items() if everything or not controller_alive(mark)}


class Slurm(BatchSystem):
    name = "slurm"
    compute_backend = "slurmcern"
    submit = "sbatch"
    controller_name = "slurmctld"

    def controller(self) -> tuple[str, int] | None:
        """`SlurmctldHost[0] = NAME(ADDRESS)` (or `NAME`) and `SlurmctldPort`, from
        `scontrol show config`."""
        try:
            out = run_command(["scontrol", "show", "config"], "asking Slurm for its controller")
        except ClusterError:
            return None
        host = re.search(r"^SlurmctldHost\[0\]\s*=\s*([^(\s]+)(?:\(([^)]+)\))?", out, re.M)
        port = re.search(r"^SlurmctldPort\s*=\s*(\d+)", out, re.M)
        if host is None:
            return None
        return host.group(2) or host.group(1), int(port.group(1)) if port else 6817

    def worker_job(self, scheduler, name, run_id, threads, memory, log, environment, security=None):  # type: ignore[no-untyped-def]
        SLURMJob = jobqueue("slurm").SLURMJob

        extra = [*self._extra(), *self.site.extra_directives]
        # a worker whose node failed is reported lost, not requeued as a second one of its name
        extra += [f"--output={log}", "--open-mode=append", "--no-requeue"]
        extra.append(f"--comment={COMMENT}{controller_mark()}")
        if self.site.qos:
            extra.append(f"--qos={self.site.qos}")
        return SLURMJob(
            scheduler=scheduler,
            job_name=run_id,
            queue=self.site.partition,
            account=self.site.account,
            walltime=self.site.walltime,
            job_extra_directives=extra,
            **self._common(threads, memory, name, environment, security),
        )

    def submit_step(self, argv, name, run_id, output, workdir, options):  # type: ignore[no-untyped-def]
        command = ["sbatch", "--parsable", f"--job-name={run_id}", f"--output={output}"]
        command += [f"--chdir={workdir}", "--export=ALL", f"--comment={COMMENT}{controller_mark()}"]
        command += ["--ntasks=1", f"--cpus-per-task={options.get('cpus', 1)}"]
        if options.get("memory"):
            command.append(f"--mem={options['memory']}")
        partition = options.get("slurm_partition") or self.site.partition
        if partition:
            command.append(f"--partition={partition}")
        if options.get("slurm_time") or self.site.walltime:
            command.append(f"--time={options.get('slurm_time') or self.site.walltime}")
        if self.site.account:
            command.append(f"--account={self.site.account}")
        if self.site.qos:
            command.append(f"--qos={self.site.qos}")
        command += [f"--{d.lstrip('-')}" for d in self.site.extra_directives]
        command += ["--wrap", "exec " + shlex.join(argv)]
        out = run_command(command, f"submitting step {name}")
        return out.strip().split(";")[0]

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        out = run_command(
            ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%N"],
            "asking Slurm for the run's jobs",
        )
        found = {}
        for line in out.splitlines():
            job_id, state, reason, node = (line.split("|") + ["", "", ""])[:4]
            found[job_id] = JobState(state, "" if reason == "None" else reason, node=node)
        return {j: found.get(j, JobState("GONE")) for j in job_ids}

    def exit_code(self, job_id: str) -> int | None:
        """The job's exit code as Slurm recorded it (ExitCode=N:SIGNAL)."""
        try:
            out = run_command(["scontrol", "-o", "show", "job", job_id], "asking Slurm")
        except ClusterError:
            return None
        match = re.search(r"\bExitCode=(\d+):(\d+)", out)
        if not match:
            return None
        code, signum = int(match.group(1)), int(match.group(2))
        return 128 + signum if signum else code

    def queued(self, run_id: str) -> list[str]:
        out = run_command(["squeue", "-h", f"--name={run_id}", "-o", "%i"], "asking Slurm")
        return out.split()

    def cancel_run(self, run_id: str) -> None:
        run_command(["scancel", f"--name={run_id}"], "cancelling the run's Slurm jobs")

    def signal(self, job_id: str, signum: int) -> None:
        import signal as signals

        argv = ["scancel", job_id]
        if signum != signals.SIGKILL:
            argv[1:1] = ["--full", f"--signal={signals.Signals(signum).name.removeprefix('SIG')}"]
        run_command(argv, f"signalling Slurm job {job_id}")

    def abandoned_runs(self, everything: bool = False) -> set[str]:
        out = run_command(["squeue", "-h", "-o", "%j|%k"], "asking Slurm")
        marks = {}
        for line in out.splitlines():
            name, _, comment = line.partition("|")
            if comment.startswith(COMMENT):
                marks[name] = comment.removeprefix(COMMENT)
        return abandoned(marks, everything)


class QueueWatch:
    """The queue asked about job ids, where a batch controller that does not answer for a
    moment (slurmctld busy, a schedd restarting) is a hiccup, not the end of the run: only
    after `patience` seconds of failures is it a ClusterError."""

    def __init__(self, system: BatchSystem, patience: float = 120.0) -> None:
        self.system = system
        self.patience = patience
        self.failing_since: float | None = None

    def states(self, job_ids: list[str]) -> dict[str, JobState] | None:
        try:
            states = self.system.states(job_ids)
        except ClusterError as e:
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
                say(f"warning: {e}; asking again")
            elif now - self.failing_since > self.patience:
                raise ClusterError(f"{e} (for {self.patience:g} s)") from None
            return None
        self.failing_since = None
        return states
