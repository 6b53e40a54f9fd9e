"""What happens to a Kubernetes run's pods is reported, each thing once: a worker's container
killed for memory (naming its limit) or exited, a worker's pod evicted or deleted, and a
scheduler pod restarted or gone, which fails the run. First the pure watcher on pod dicts,
then the backend in a run against the fake API server of test_kube_run.py."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_kube_run import FakeKubeServer, run_on

import daskstep.run
from daskstep.kube.podwatch import PodEvent, PodWatch
from daskstep.scaling import Adapt

WORKER_OOM = "killed for memory (OOM)"
RESTARTS = "; Kubernetes restarts it"


def pod(
    name: str = "ds-1-default-worker-0-5f7c9",
    component: str = "worker",
    worker_name: str | None = "ds-1-default-worker-0",
    containers: tuple[str, ...] = ("worker",),
    limit: str | None = "3Gi",
) -> dict[str, Any]:
    """A running pod as the API server gives it, every container ready, none restarted."""
    spec_containers = []
    for container in containers:
        body: dict[str, Any] = {"name": container, "image": "dask"}
        if limit:
            body["resources"] = {"limits": {"memory": limit, "cpu": "2"}}
        spec_containers.append(body)
    if worker_name:
        spec_containers[0]["env"] = [{"name": "DASK_WORKER_NAME", "value": worker_name}]
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"dask.org/cluster-name": "ds-1", "dask.org/component": component},
        },
        "spec": {"containers": spec_containers},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": c, "ready": True, "restartCount": 0, "state": {"running": {}}}
                for c in containers
            ],
        },
    }


def ended(p: dict[str, Any], reason: str, code: int, container: int = 0, id: str = "") -> None:
    """As the kubelet: the container ended and runs again; its end is now `lastState`."""
    status = p["status"]["containerStatuses"][container]
    status["restartCount"] += 1
    terminated = {"exitCode": code, "reason": reason}
    if id:
        terminated["containerID"] = id
    status["lastState"] = {"terminated": terminated}


def test_an_oom_killed_worker_container_names_its_limit_once() -> None:
    watch, worker = PodWatch(), pod()
    assert watch.look([worker]) == []
    ended(worker, "OOMKilled", 137)
    why = f"its container passed its memory limit of 3Gi{RESTARTS}"
    assert watch.look([worker]) == [
        PodEvent("worker ds-1-default-worker-0", WORKER_OOM, why, "ds-1-default-worker-0-5f7c9")
    ]
    assert watch.look([worker]) == []
    assert watch.look([copy.deepcopy(worker)]) == []


def test_a_restart_count_growing_twice_is_two_events_with_each_exit() -> None:
    watch, worker = PodWatch(), pod()
    ended(worker, "Error", 137)
    [first] = watch.look([worker])
    assert (first.what, first.why) == ("lost", f"it exited with 137 (Error){RESTARTS}")
    ended(worker, "OOMKilled", 137)
    [second] = watch.look([worker])
    assert second.what == WORKER_OOM
    assert watch.look([worker]) == []


def test_a_container_seen_ended_then_restarted_is_one_event() -> None:
    """A crash-looping container waits in `state.terminated` before its restartCount grows;
    the same end then shows as `lastState`: one event, said as soon as it shows."""
    watch, worker = PodWatch(), pod()
    status = worker["status"]["containerStatuses"][0]
    status["state"] = {"terminated": {"exitCode": 1, "reason": "Error", "containerID": "c-1"}}
    [event] = watch.look([worker])
    assert event.why == f"it exited with 1 (Error){RESTARTS}"
    status["state"] = {"running": {}}
    ended(worker, "Error", 1, id="c-1")
    assert watch.look([worker]) == []


def test_restarts_between_two_looks_are_counted() -> None:
    watch, worker = PodWatch(), pod()
    ended(worker, "Error", 1)
    ended(worker, "Error", 1)
    ended(worker, "Error", 2)
    [event] = watch.look([worker])
    assert event.why == f"it exited with 2 (Error) (3 restarts since the last look){RESTARTS}"


def test_a_worker_that_exits_0_is_no_news_as_on_the_other_backends() -> None:
    watch, worker = PodWatch(), pod()
    ended(worker, "Completed", 0)
    assert watch.look([worker]) == []


def test_a_sidecar_container_is_named_and_a_worker_without_a_dask_name_by_its_pod() -> None:
    watch = PodWatch()
    worker = pod(worker_name=None, containers=("worker", "kerberos"), limit=None)
    ended(worker, "OOMKilled", 137, container=1)
    [event] = watch.look([worker])
    assert event.component == "worker ds-1-default-worker-0-5f7c9"
    assert event.why == f"its kerberos container ran out of memory (no limit){RESTARTS}"


def test_an_evicted_worker_pod_is_lost_once_even_when_it_then_goes() -> None:
    watch, worker = PodWatch(), pod()
    watch.look([worker])
    worker["status"].update(
        phase="Failed", reason="Evicted", message="The node was low on resource: memory."
    )
    [event] = watch.look([worker])
    assert event == PodEvent(
        "worker ds-1-default-worker-0",
        "lost",
        "its pod ds-1-default-worker-0-5f7c9 was evicted: The node was low on resource: memory.",
        "ds-1-default-worker-0-5f7c9",
    )
    assert watch.look([worker]) == []
    assert watch.look([]) == []


def test_a_deleted_worker_pod_is_lost_and_its_replacement_is_watched() -> None:
    watch, worker = PodWatch(), pod()
    watch.look([worker])
    worker["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    [terminating] = watch.look([worker])
    assert terminating.why == "its pod ds-1-default-worker-0-5f7c9 is being deleted"
    assert watch.look([]) == []

    other = pod("ds-1-default-worker-1-aa", worker_name="ds-1-default-worker-1")
    replacement = pod("ds-1-default-worker-0-bb")
    watch.look([other])
    [gone] = watch.look([replacement])
    assert (gone.component, gone.why) == (
        "worker ds-1-default-worker-1",
        "its pod ds-1-default-worker-1-aa was deleted",
    )
    ended(replacement, "OOMKilled", 137)
    [event] = watch.look([replacement])
    assert event.component == "worker ds-1-default-worker-0" and event.what == WORKER_OOM


def test_a_failed_worker_pod_gives_the_pods_reason() -> None:
    worker = pod()
    worker["status"].update(phase="Failed", reason="NodeLost")
    [event] = PodWatch().look([worker])
    assert event.why == "its pod ds-1-default-worker-0-5f7c9 failed (NodeLost)"


def test_the_scheduler_restarted_or_gone_is_a_scheduler_event() -> None:
    watch = PodWatch()
    scheduler = pod("ds-1-scheduler", "scheduler", None, ("scheduler",), "2Gi")
    ended(scheduler, "Error", 1)  # before the first look: the cluster got ready after it
    assert watch.look([scheduler]) == []
    ended(scheduler, "OOMKilled", 137)
    [event] = watch.look([scheduler])
    assert event.scheduler and event.what == WORKER_OOM
    assert event.message() == (
        "the scheduler pod ds-1-scheduler: killed for memory (OOM): "
        "its container passed its memory limit of 2Gi"
    )
    [gone] = watch.look([])
    assert gone.scheduler and gone.message() == (
        "the scheduler pod ds-1-scheduler: lost: its pod ds-1-scheduler was deleted"
    )


def test_pods_that_are_not_the_clusters_dask_pods_are_not_watched() -> None:
    job = pod("ds-1-1-fit-plot-pod", "job-runner")
    ended(job, "Error", 1)
    assert PodWatch().look([job]) == []


# -- through the backend, in a run --------------------------------------------------------------
class WatchedServer(FakeKubeServer):
    """The fake, with a first step that lasts: once the backend has looked at the cluster's
    pods mid-step, `happen` does something to a pod (each of several at a look of its own);
    once it looked again, the step ends 0 (or after 10 s, so that a backend that never looks
    fails the test instead of hanging)."""

    def __init__(self, *happen: Any) -> None:
        super().__init__(codes={1: 0})
        self.happen = list(happen)
        self.looks = 0  # lists of the cluster's pods
        self.started_at: int | None = None
        self.happened_at: int | None = None
        self.deadline = time.monotonic() + 10
        self.on_step_poll = self._step_poll

    def list(self, kind: str, namespace: str, labels: str = "", fields: str = "") -> list:
        if kind == "Pod" and labels == "dask.org/cluster-name=ds-1":
            self.looks += 1
        return super().list(kind, namespace, labels, fields)

    def _step_poll(self) -> None:
        if self.started_at is None:
            self.started_at = self.looks
        elif self.happen and self.looks > (self.happened_at or self.started_at):
            self.happen.pop(0)(self)
            self.happened_at = self.looks
        elif self.happened_at is not None and self.looks > self.happened_at and not self.happen:
            self.end_step()
        if time.monotonic() > self.deadline:
            self.end_step()

    def end_step(self) -> None:
        step = self.objects.get(("Pod", "ds-1-1-fit-plot-pod"))
        if step is not None:
            message = json.dumps({"reason": "Completed", "exit_code": 0})
            terminated = {"exitCode": 0, "message": message}
            step["status"]["containerStatuses"][0]["state"] = {"terminated": terminated}


@pytest.fixture(autouse=True)
def look_every_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run asks the cluster at each of its polls, not once a second."""
    monkeypatch.setattr(daskstep.run, "ALIVE_CHECK_SECONDS", 0.0)


def job_log(tmp_path: Path) -> list[str]:
    return (tmp_path / ".daskstep" / "runs" / "1" / "raw" / "job.log").read_text().splitlines()


def test_an_oom_kill_of_a_worker_mid_step_is_one_event_and_the_run_goes_on(tmp_path) -> None:
    server = WatchedServer(lambda s: s.restart_container("ds-1-default-worker-1-5f7c9"))
    code, status = run_on(server, tmp_path)
    assert code == 0 and status["exit_code"] == 0
    [event] = status["events"]
    assert event["component"] == "worker ds-1-default-worker-1"
    assert event["what"] == "killed for memory (OOM)"
    assert event["why"] == f"its container passed its memory limit of 3Gi{RESTARTS}"
    line = (
        "daskstep: warning: worker ds-1-default-worker-1: killed for memory (OOM): "
        f"its container passed its memory limit of 3Gi{RESTARTS}"
    )
    assert job_log(tmp_path).count(line) == 1
    assert [s["exit_code"] for s in status["steps"]] == [0, 0]
    assert server.objects == {}


def test_an_evicted_worker_mid_step_is_lost_once(tmp_path) -> None:
    server = WatchedServer(lambda s: s.evict("ds-1-default-worker-0-5f7c9"))
    code, status = run_on(server, tmp_path)
    assert code == 0
    assert [(e["component"], e["what"], e["why"]) for e in status["events"]] == [
        (
            "worker ds-1-default-worker-0",
            "lost",
            "its pod ds-1-default-worker-0-5f7c9 was evicted: The node was low on resource: "
            "memory.",
        )
    ]


def test_the_scheduler_killed_mid_step_fails_the_run_as_scheduler_lost(tmp_path) -> None:
    server = WatchedServer(lambda s: s.restart_container("ds-1-scheduler", "Error", 1))
    code, status = run_on(server, tmp_path)
    assert code == 71 and status["reason"] == "SchedulerLost"
    message = "the scheduler pod ds-1-scheduler: lost: it exited with 1 (Error)"
    assert message in status["message"]
    assert [(e["component"], e["what"]) for e in status["events"]] == [("scheduler", "lost")]
    assert f"daskstep: error: {message}" in job_log(tmp_path)
    assert "create Job ds-1-2-step-2" not in server.log
    assert server.objects == {}, "the run's objects are deleted"


def test_adapt_leaves_the_workers_to_the_operators_autoscaler_owned_by_the_root(
    tmp_path: Path,
) -> None:
    """--adapt on Kubernetes: the DaskAutoscaler is created, owned by the root, the run waits
    for its minimum (none) instead of every worker, and the workers the operator retires are
    said as retired, not lost."""
    # mid-step, the operator scales up to 2 workers for the work, then down to 1 again
    server = WatchedServer(lambda s: s.scale_to(2), lambda s: s.scale_to(1))
    code, status = run_on(server, tmp_path, adapt=Adapt(minimum=0, maximum=3))
    assert code == 0, status
    created = [line for line in server.log if line.startswith("create")]
    cluster = created.index("create DaskCluster ds-1")
    assert created.index("create DaskAutoscaler ds-1") == cluster + 1
    assert server.owners[("DaskAutoscaler", "ds-1")] == ["uid-1"]  # the root's
    assert status["cluster"]["workers_ready"] == 0  # ready at the minimum, before any worker
    events = [(e["component"], e["what"], e["why"]) for e in status["events"]]
    assert events == [
        ("worker ds-1-default-worker-0", "started", "the DaskAutoscaler scaled up"),
        ("worker ds-1-default-worker-1", "started", "the DaskAutoscaler scaled up"),
        ("worker ds-1-default-worker-1", "retired",
         "the DaskAutoscaler scaled down; its pod ds-1-default-worker-1-5f7c9 was deleted"),
    ]  # fmt: skip
    assert server.objects == {}, "the root's deletion took the autoscaler too"


def test_pods_as_the_kubernetes_client_serialises_them() -> None:
    """The real client's models, through `sanitize_for_serialization` as KubernetesAPI reads
    them: the field names and types the watcher expects are the client's."""
    from kubernetes import client as k8s

    container = k8s.V1Container(
        name="worker",
        env=[k8s.V1EnvVar(name="DASK_WORKER_NAME", value="ds-1-default-worker-0")],
        resources=k8s.V1ResourceRequirements(limits={"memory": "3Gi"}),
    )
    killed = k8s.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled", container_id="c")
    status = k8s.V1ContainerStatus(
        name="worker", image="dask", image_id="", ready=True, restart_count=1,
        last_state=k8s.V1ContainerState(terminated=killed),
        state=k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()),
    )  # fmt: skip
    model = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name="ds-1-default-worker-0-5f7c9",
            uid="u-1",
            labels={"dask.org/cluster-name": "ds-1", "dask.org/component": "worker"},
        ),
        spec=k8s.V1PodSpec(containers=[container]),
        status=k8s.V1PodStatus(phase="Running", container_statuses=[status]),
    )
    plain = k8s.ApiClient().sanitize_for_serialization(model)
    [event] = PodWatch().look([plain])
    assert (event.component, event.what, event.why) == (
        "worker ds-1-default-worker-0",
        WORKER_OOM,
        f"its container passed its memory limit of 3Gi{RESTARTS}",
    )
