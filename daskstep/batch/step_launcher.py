"""Steps that REANA places on a batch system (`compute_backend: slurmcern` or `htcondorcern`):
the step's entrypoint zipapp runs as one batch job, in the workspace (which the batch nodes
share). Its output file is copied live into the job log and onto the terminal; its exit code is
the entrypoint's status file's, or the batch system's when the entrypoint never ran. Every
other step goes to the launcher the run's backend brought.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from daskstep.batch.systems import BatchSystem, QueueWatch
from daskstep.record import RunFolder
from daskstep.seams import StepLauncher, StepSpec, entrypoint_options

QUEUE_POLL_SECONDS = 0.5


class BatchStep:
    def __init__(
        self, system: BatchSystem, job_id: str, output: Path, status_file: Path, job_log: Path
    ) -> None:
        self.system = system
        self.job_id = job_id
        self.output = output
        self.status_file = status_file
        self.placement = {"compute_backend": system.compute_backend, "job_id": job_id}
        self._ended = threading.Event()
        self._copy = threading.Thread(target=self._tee, args=(job_log,), daemon=True)
        self._copy.start()
        self._next_poll = 0.0
        self.queue = QueueWatch(system)

    def _tee(self, job_log: Path) -> None:
        """The job's output file, as it grows, into the job log and onto the terminal."""
        offset = 0
        with open(job_log, "ab") as log:
            while True:
                ended = self._ended.is_set()
                with contextlib.suppress(OSError), open(self.output, "rb") as f:
                    f.seek(offset)
                    while chunk := f.read(65536):
                        offset += len(chunk)
                        log.write(chunk)
                        log.flush()
                        with contextlib.suppress(OSError, ValueError):
                            sys.stdout.buffer.write(chunk)
                            sys.stdout.buffer.flush()
                if ended:
                    return
                self._ended.wait(0.2)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() >= self._next_poll:
                self._next_poll = time.monotonic() + QUEUE_POLL_SECONDS
                states = self.queue.states([self.job_id])
                if states is not None and states[self.job_id].ended:
                    return self._finish(states[self.job_id].state)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(remaining, 0.05))

    def _finish(self, state: str) -> int:
        self._ended.set()
        self._copy.join(timeout=10)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            code = json.loads(self.status_file.read_text())["exit_code"]
            if isinstance(code, int):
                return code
        code = self.system.exit_code(self.job_id)
        if code is None or (code == 0 and state not in ("COMPLETED", "Completed")):
            return 1  # removed before the entrypoint could record anything
        return code

    def signal(self, signum: int) -> None:
        self.system.signal(self.job_id, signum)


class BatchStepLauncher:
    """Batch steps to their system; every other step to `other`."""

    def __init__(
        self,
        systems: dict[str, BatchSystem],
        other: StepLauncher,
        run_id: str,
        record: RunFolder,
        entrypoint: Path,
    ) -> None:
        self.systems = systems  # compute_backend -> system
        self.other = other
        self.run_id = run_id
        self.record = record
        self.workspace = record.workspace
        self.entrypoint = entrypoint
        self.job_log = record.raw / "job.log"

    def start(self, step: StepSpec) -> Any:
        system = self.systems.get(step.compute_backend or "")
        if system is None:
            return self.other.start(step)
        output = self.record.raw / "steps" / f"{step.status_file.stem}.out"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.unlink(missing_ok=True)
        python = system.site.python or sys.executable
        path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
        env = [f"PATH={path}", "PYTHONUNBUFFERED=1", f"DASKSTEP_WORKSPACE={self.workspace}"]
        env += [f"{k}={v}" for k, v in step.environment.items()]
        argv = ["env", *env, python, str(self.entrypoint), *entrypoint_options(step)]
        job_id = system.submit_step(
            argv, step.name, self.run_id, output, self.workspace, dict(step.batch_options)
        )
        return BatchStep(system, job_id, output, step.status_file, self.job_log)
