"""The Docker backend's steps: each step's entrypoint in a container of the step's own image."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

from daskstep.docker.containers import run_labels, user_options
from daskstep.seams import StepSpec, entrypoint_options

PYZ_IN_CONTAINER = "/daskstep/entrypoint.pyz"


class DockerStep:
    """One step's entrypoint in a container; its output goes to the terminal and job.log."""

    def __init__(self, container: Any, job_log: Path) -> None:
        self.container = container
        self.code: int | None = None
        self._copy = threading.Thread(target=self._tee, args=(job_log,), daemon=True)
        self._copy.start()
        self._ended = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _tee(self, job_log: Path) -> None:
        out = sys.stdout.buffer
        with open(job_log, "ab") as log:
            for chunk in self.container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
                with contextlib.suppress(OSError, ValueError):
                    out.write(chunk)
                    out.flush()

    def _wait(self) -> None:
        try:
            self.code = int(self.container.wait().get("StatusCode", 1))
        except Exception:  # the engine went away: the step is lost
            self.code = 69
        self._ended.set()

    def wait(self, timeout: float) -> int | None:
        if not self._ended.wait(timeout):
            return None
        self._copy.join(timeout=5)
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        return self.code

    def signal(self, signum: int) -> None:
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            self.container.kill(signal=int(signum))


class DockerStepLauncher:
    """Each step in a container of its `environment` image (the cluster's when it names none),
    with the workspace at the same path, the entrypoint zipapp mounted read-only, and the
    credentials folder read-only."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        workspace: Path,
        pyz: Path,
        job_log: Path,
        default_image: str,
        credentials: Path | None = None,
        network: str = "host",
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.workspace = workspace
        self.pyz = pyz
        self.job_log = job_log
        self.default_image = default_image
        self.credentials = credentials
        self.network = network

    def start(self, step: StepSpec) -> DockerStep:
        volumes = {
            str(self.workspace): {"bind": str(self.workspace), "mode": "rw"},
            str(self.pyz): {"bind": PYZ_IN_CONTAINER, "mode": "ro"},
        }
        if self.credentials is not None:
            volumes[str(self.credentials)] = {"bind": str(self.credentials), "mode": "ro"}
        user = user_options()
        environment = {"PYTHONUNBUFFERED": "1", "DASKSTEP_WORKSPACE": str(self.workspace)}
        environment.update(user.pop("environment", {}))
        environment.update(step.environment)
        container = self.client.containers.run(
            step.image or self.default_image,
            ["python3", PYZ_IN_CONTAINER, *entrypoint_options(step)],
            detach=True,
            init=True,
            network_mode=self.network,
            working_dir=str(self.workspace),
            volumes=volumes,
            environment=environment,
            labels=run_labels(self.run_id, "step", **{"daskstep.step": step.name}),
            name=f"{self.run_id}-step-{step.index + 1}",
            **user,
        )
        return DockerStep(container, self.job_log)
