"""The Kubernetes backend: the run's objects (daskstep/kube/) created through the thin API
layer, the cluster awaited as the API server sees it, and one root deleted at the end, which
takes everything else with it (ownerReferences), whatever happened.

The root is created first: the other objects need its uid for their ownerReferences. If
`daskstep run` is killed, its reaper (`daskstep sidecar reaper --kubernetes`, started before
the root) deletes the root; the workers also end by themselves once the scheduler is gone
(`--death-timeout`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec, Progress
from daskstep.backends.registry import Kind, RemoteRun
from daskstep.errors import ClusterError, InputError, Problem, SchedulerLost
from daskstep.kube.api import KubeAPI
from daskstep.kube.objects import DASK_CLUSTER_LABEL, RUN_LABEL, KubeOptions, build_root
from daskstep.kube.podwatch import PodWatch
from daskstep.kube.readiness import wait_running
from daskstep.kube.render import cluster_objects
from daskstep.progress import say
from daskstep.reaper import Reaper
from daskstep.record import RunFolder, Workspace
from daskstep.workflow.spec import Workflow
from sidecar.lifecycle import StopSignal

ROOT_GONE_SECONDS = 60.0  # how long stop() waits for the garbage collector to finish


class KubernetesBackend(ClusterBackend):
    name = "kubernetes"
    poll_interval = 1.0
    scheduler_reachable = False
    scales_itself = True  # with --adapt, the operator's DaskAutoscaler (kube/cluster.py)

    def __init__(
        self,
        api: KubeAPI,
        options: KubeOptions,
        workflow: Workflow,
        reana_yaml: str,
        reaper: bool = False,
    ) -> None:
        super().__init__()
        self.reaper = reaper  # `daskstep sidecar reaper`: deletes the root if we are killed
        self._reaper: Reaper | None = None
        self.api = api
        self.options = options  # with the root's uid once it exists
        self.workflow = workflow
        self.reana_yaml = reana_yaml
        self.root_created = False
        self.root_gone_seconds = ROOT_GONE_SECONDS
        self._pods = PodWatch(options.adapt)  # what check_alive said about the pods
        self._scheduler_lost: str | None = None

    def _start(self, spec: ClusterSpec, run: RunFolder) -> ClusterHandle:
        if self.reaper:  # before the root exists: from here on, a SIGKILL cannot leak it
            self._reaper = Reaper(
                "--kubernetes", f"{self.options.namespace}/{self.options.root_name}"
            )
        root = self.api.create(build_root(self.options, self.reana_yaml))
        self.root_created = True
        self.options = dataclasses.replace(self.options, root_uid=root["metadata"]["uid"])
        for obj in cluster_objects(self.workflow, self.options):
            self.check_cancel()
            self.api.create(obj)
        dashboard = (
            f"https://{self.options.dashboard_host}/status" if self.options.dashboard_host else None
        )
        return ClusterHandle(self.options.scheduler_address, dashboard)

    def wait_ready(
        self,
        workers: int,
        timeout: float,
        progress: Progress | None = None,
        cancel: StopSignal | None = None,
    ) -> int:
        """Through the API server, not the scheduler: its ClusterIP is not reachable from
        where `daskstep run` may run."""
        self.cancel = cancel or self.cancel
        return wait_running(
            self.api, self.options, workers, timeout, self.cancel, self.poll_interval, progress
        )

    def check_alive(self) -> None:
        cluster = self.api.get("DaskCluster", self.options.namespace, self.options.cluster_name)
        if cluster is None:
            raise ClusterError(f"DaskCluster {self.options.cluster_name} was deleted")
        phase = (cluster.get("status") or {}).get("phase")
        if phase not in (None, "Running", "Pending", "Created"):
            raise ClusterError(f"DaskCluster {self.options.cluster_name} is {phase}")
        self._watch_pods()

    def _watch_pods(self) -> None:
        """What happened to the cluster's pods since the last look (run.py looks once a
        second mid-step), each said once: a worker restarted or gone is an event; a scheduler
        restarted or gone took the run's tasks and results with it, and fails the run."""
        if self._scheduler_lost is None:
            selector = f"{DASK_CLUSTER_LABEL}={self.options.cluster_name}"
            try:
                pods = self.api.list("Pod", self.options.namespace, labels=selector)
            except Exception:  # a missed look is no dead cluster; the next comes in 1 s
                return
            for event in self._pods.look(pods):
                if event.scheduler:
                    self._scheduler_lost = self._scheduler_lost or event.message()
                else:
                    self.report(event.component, event.what, event.why)
        if self._scheduler_lost is not None:
            raise SchedulerLost(self._scheduler_lost)

    def log_sources(self, run: RunFolder) -> list[str]:
        return [f"kubernetes:{self.options.namespace}/{RUN_LABEL}={self.options.run_id}"]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "namespace": self.options.namespace, "run": self.options.run_id}

    def stop(self) -> None:
        """Delete the root (foreground: its dependents go first) and wait a while for it."""
        if self.root_created:
            self._delete_root()
        if self._reaper is not None:  # nothing left for it: let it go
            self._reaper.let_go()
            self._reaper = None

    def _delete_root(self) -> None:
        namespace, root = self.options.namespace, self.options.root_name
        self.api.delete("ConfigMap", namespace, root)
        deadline = time.monotonic() + self.root_gone_seconds
        while self.api.get("ConfigMap", namespace, root) is not None:
            if time.monotonic() >= deadline:
                print(
                    f"warning: the root ConfigMap {root} is still being deleted after "
                    f"{self.root_gone_seconds:g} s; Kubernetes' garbage collector goes on",
                    flush=True,
                )
                break
            time.sleep(0.5)
        self.root_created = False


class KubernetesKind(Kind):
    """The cluster (the operator's DaskCluster) and the steps (Jobs) run in Kubernetes; the
    credential sidecars too, in the pods, from the namespace's Secret, so none starts here. The
    log sidecar follows the run's pods into the local workspace."""

    name = "kubernetes"
    extra = "kubernetes"
    adapt_default = True  # as REANA's (DASK_AUTOSCALER_ENABLED)
    adapt_minimum = 0  # as REANA's DaskAutoscaler

    @classmethod
    def gc(cls, everything: bool) -> None:
        from daskstep.kube.objects import COMPONENT_LABEL

        raise InputError(
            [
                Problem(
                    "--backend",
                    "a kubernetes run's objects are owned by its root ConfigMap, which its "
                    "reaper deletes; if the reaper died too, delete the root: kubectl delete "
                    f"configmap -n NAMESPACE -l {COMPONENT_LABEL}=root,{RUN_LABEL}=RUN_ID",
                )
            ]
        )

    @classmethod
    def options_from(cls, args: Any) -> Any:
        from daskstep.kube.options import options_from

        return options_from(args)

    def remote_run(self, workspace: Path) -> RemoteRun | None:
        from daskstep.kube.api import KubernetesAPI
        from daskstep.kube.step_launcher import KubernetesStepLauncher
        from daskstep.secret_env import forget_secret_variables
        from daskstep.workflow.inputs import prepare_workspace, stage_inputs

        workflow = self.workflow
        if workflow.dask is None:
            raise InputError(
                [
                    Problem(
                        "workflow.resources.dask",
                        "is needed on --backend kubernetes (for now); "
                        "add dask: with image:, or use --backend local",
                    )
                ]
            )
        options = self.options.own or KubeOptions()
        reana_yaml = workflow.path.read_text()
        options = dataclasses.replace(options, tls=self.options.tls, adapt=self.options.adapt)
        api = KubernetesAPI()  # a missing configuration is bad input: before anything is made
        forget_secret_variables()
        workspace = prepare_workspace(workspace)
        stage_inputs(workflow, workspace)
        record = Workspace(workspace).new_run()
        cluster = KubernetesBackend(api, options, workflow, reana_yaml, reaper=True)
        say(f"run {options.run_id} in namespace {options.namespace}")
        return RemoteRun(cluster, KubernetesStepLauncher(api, cluster, workflow), record)
