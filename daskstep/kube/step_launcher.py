"""Each step as a Job (step_objects.py) of the run, followed through the thin API layer until its
pod's step container terminates; its exit code and termination message come back into the
run's status as the other launchers' do. A signal deletes the Job: Kubernetes sends the pod
SIGTERM, the entrypoint forwards it to the commands, and the grace period ends it."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from daskstep.kube.api import KubeAPI
from daskstep.kube.step_objects import build_step_job, step_job_name
from daskstep.seams import StepSpec
from daskstep.workflow.spec import Workflow

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods
POLL_SECONDS = 1.0


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == "step":
            return (container.get("state") or {}).get("terminated")
    return None


class KubernetesStep:
    def __init__(self, api: KubeAPI, namespace: str, job: str, spec: StepSpec) -> None:
        self.api = api
        self.namespace = namespace
        self.job = job
        self.spec = spec
        self.deleted_by: int | None = None
        self.next_poll = 0.0
        self.code: int | None = None

    def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.code is None:
            if time.monotonic() >= self.next_poll:
                self.next_poll = time.monotonic() + POLL_SECONDS  # read now: tests shorten it
                self.code = self._poll()
            if self.code is not None or time.monotonic() >= end:
                break
            time.sleep(max(0.0, min(end, self.next_poll) - time.monotonic()))
        return self.code

    def _poll(self) -> int | None:
        pods = self.api.list("Pod", self.namespace, labels=f"{JOB_NAME_LABEL}={self.job}")
        for pod in pods:
            terminated = _terminated(pod)
            if terminated is not None:
                self._keep(terminated)
                return int(terminated.get("exitCode", 1))
        job = self.api.get("Job", self.namespace, self.job)
        if job is None:  # deleted: by our signal, or by someone else
            return 128 + (self.deleted_by or signal.SIGTERM)
        conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
        failed = conditions.get("Failed", {})
        if failed.get("status") == "True":  # e.g. DeadlineExceeded, with no container ended
            self._keep({"message": f"{failed.get('reason')}: {failed.get('message', '')}"})
            return 1
        return None

    def _keep(self, terminated: dict[str, Any]) -> None:
        """The entrypoint's termination message is its status in brief (JSON, <= 1 KiB)."""
        message = (terminated.get("message") or "").strip()
        if not message:
            return
        self.spec.status_file.parent.mkdir(parents=True, exist_ok=True)
        self.spec.status_file.with_suffix(".message").write_text(message + "\n")
        try:
            json.loads(message)
        except ValueError:
            return
        self.spec.status_file.write_text(message + "\n")

    def signal(self, signum: int) -> None:
        self.deleted_by = self.deleted_by or signum
        self.api.delete("Job", self.namespace, self.job)


class KubernetesStepLauncher:
    def __init__(self, api: KubeAPI, backend: Any, workflow: Workflow) -> None:
        self.api = api
        self.backend = backend  # its options carry the root's uid once the cluster started
        self.workflow = workflow

    def start(self, step: StepSpec) -> KubernetesStep:
        options = self.backend.options
        job = build_step_job(self.workflow, step.index, options)
        self.api.create(job)
        name = step_job_name(options, step.index, self.workflow.steps[step.index])
        return KubernetesStep(self.api, options.namespace, name, step)
