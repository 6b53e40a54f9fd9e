"""What the Docker backend and its step launcher share: the labels that mark a run's
containers, how they are removed (on every path, by the reaper, or by `daskstep gc`), and the
step launcher that runs each step's entrypoint in a container of the step's image.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daskstep.parts import StepSpec, entrypoint_options
from daskstep.procutil import controller_alive, controller_mark
from sidecar.docker_logs import COMPONENT_LABEL, RUN_LABEL, WORKER_LABEL

__all__ = ["COMPONENT_LABEL", "RUN_LABEL", "WORKER_LABEL", "DockerStepLauncher", "listed"]

CONTROLLER_LABEL = "daskstep.controller"  # host:pid of the daskstep run that made it
PYZ_IN_CONTAINER = "/daskstep/entrypoint.pyz"


def run_labels(run_id: str, component: str, **more: str) -> dict[str, str]:
    labels = {RUN_LABEL: run_id, COMPONENT_LABEL: component}
    labels[CONTROLLER_LABEL] = controller_mark()
    return {**labels, **more}


def user_options() -> dict[str, Any]:
    """Containers run as the invoking user, so that what they write into the workspace is
    theirs; HOME is set where any user can write."""
    if os.getuid() == 0:
        return {}
    return {"user": f"{os.getuid()}:{os.getgid()}", "environment": {"HOME": "/tmp"}}


def in_parallel(calls: list[Callable[[], Any]], threads: int = 8) -> list[Any]:
    """Engine calls side by side (each waits on the engine, not on us); the first error raises."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def listed(client: Any, *labels: str, stopped_too: bool = True) -> list[dict[str, Any]]:
    """The engine's own list, in one call: rows with Id, Names, Labels and State. (The SDK's
    `containers.list` inspects each one afterwards, which fails on one removed meanwhile.)"""
    return client.api.containers(all=stopped_too, filters={"label": list(labels)})


def remove_run(client: Any, run_id: str) -> int:
    """Remove every container of the run, running or not; how many there were."""
    found = listed(client, f"{RUN_LABEL}={run_id}")

    def remove(cid: str) -> None:
        with contextlib.suppress(Exception):  # already gone, or being removed
            client.api.remove_container(cid, force=True, v=True)

    in_parallel([lambda c=row["Id"]: remove(c) for row in found])
    return len(found)


def abandoned_runs(client: Any, everything: bool = False) -> set[str]:
    """The runs whose controller on this host is gone (or every run)."""
    runs = set()
    for row in listed(client, RUN_LABEL):
        labels = row.get("Labels") or {}
        if everything or not controller_alive(labels.get(CONTROLLER_LABEL, "")):
            runs.add(labels[RUN_LABEL])
    return runs


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
