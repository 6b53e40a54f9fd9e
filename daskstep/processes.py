"""The parts of a run that are processes on this machine: the step launcher of the local
backend (the entrypoint as a child process) and the log shipper (`daskstep sidecar logs`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from daskstep.progress import say
from daskstep.record import RunFolder
from daskstep.seams import StepSpec, entrypoint_options
from daskstep.secret_env import child_env

LOG_DRAIN_TIMEOUT = 60.0


class LocalStep:
    """One step's entrypoint as a child process, its output sent to the terminal and job.log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, job_log: Path) -> None:
        log = open(job_log, "ab")  # noqa: SIM115  (the copying thread closes it)
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals reach it only through us
            )
        except BaseException:
            log.close()
            raise
        self._tee = threading.Thread(target=self._copy, args=(log,), daemon=True)
        self._tee.start()

    def _copy(self, job_log: BinaryIO) -> None:
        assert self.proc.stdout is not None
        out = sys.stdout.buffer
        with job_log:
            while chunk := os.read(self.proc.stdout.fileno(), 65536):
                job_log.write(chunk)
                job_log.flush()
                with contextlib.suppress(OSError, ValueError):
                    out.write(chunk)
                    out.flush()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._tee.join(timeout=5)
        return 128 - code if code < 0 else code


class LocalStepLauncher:
    """Steps as processes in daskstep's own Python environment, whose bin/ comes first on the
    step's PATH, so that `python` has the workers' Dask."""

    def __init__(self, workspace: Path, job_log: Path) -> None:
        self.workspace = workspace
        self.job_log = job_log

    def start(self, step: StepSpec) -> LocalStep:
        argv = [sys.executable, "-m", "entrypoint", "--die-with-parent"]
        argv += entrypoint_options(step)
        env = child_env()
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"  # live job logs
        env["DASKSTEP_WORKSPACE"] = str(self.workspace)
        env.update(step.environment)
        return LocalStep(argv, env, self.workspace, self.job_log)


class LocalLogShipper:
    """`daskstep sidecar logs` as a child process: it fills the run's store. It is stopped by
    closing its stdin, which it reads once it runs: a stop asked while it still starts (a step
    of 0.1 s) waits for it there, where a SIGTERM would have killed it with nothing stored."""

    def __init__(self, record: RunFolder) -> None:
        self.record = record
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, sources: list[str]) -> None:
        argv = [sys.executable, "-m", "daskstep", "sidecar", "logs", "--stop-on-eof"]
        argv += ["--workspace", str(self.record.workspace), "--store", str(self.record.logs)]
        argv += ["--checkpoints", str(self.record.checkpoints)]
        for source in sources:
            argv += ["--source", source]
        self.record.folder.mkdir(parents=True, exist_ok=True)
        with open(self.record.folder / "sidecar.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def stop(self) -> None:
        """After everything else stopped: the sidecar drains what is left, then exits."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=LOG_DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"warning: the log sidecar did not drain within {LOG_DRAIN_TIMEOUT:g} s")
            proc.kill()
            proc.wait()


class StatusGuard:
    """A reaper that marks the run failed (ControllerLost) if `daskstep run` dies before it
    recorded the run's end: SIGKILL, the OOM killer, a closed terminal's SIGHUP."""

    def __init__(self, record: RunFolder) -> None:
        self.record = record
        self.reaper: Any = None

    def start(self) -> None:
        from daskstep.reaper import Reaper

        self.reaper = Reaper(
            "--status", str(self.record.status_file), "--store", str(self.record.logs)
        )

    def let_go(self) -> None:
        """Only once the run's end is in status.json: there is nothing left to mark."""
        if self.reaper is not None:
            self.reaper.dismiss()
            self.reaper = None
