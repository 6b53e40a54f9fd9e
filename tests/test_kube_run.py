"""`daskstep run --backend kubernetes`: the run loop with the real Kubernetes backend and step
launcher, over a fake of the thin API layer that plays the API server, the operator, the Job
controller and the garbage collector (no API server can run here; the real layer is tested
against an HTTP stand-in in test_kube_api.py)."""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from test_kube_render import workflow_of

import daskstep.kube.step_launcher
from daskstep.backends.kubernetes import KubernetesBackend
from daskstep.kube.objects import KubeOptions
from daskstep.kube.step_launcher import KubernetesStepLauncher
from daskstep.record import Workspace
from daskstep.run import Run
from daskstep.scaling import Adapt


class FakeKubeServer:
    """Fake: the API server's storage, plus what controllers would do to it."""

    def __init__(self, codes: dict[int, int] | None = None, runs: bool = True) -> None:
        self.codes = codes or {}  # step index -> exit code; missing: the step never ends
        self.runs = runs  # whether the operator gets the cluster Running
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: list[str] = []
        self.on_step_poll: Any = None
        self.uids = 0
        self.owners: dict[tuple[str, str], list[str]] = {}

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        self.uids += 1
        obj["metadata"]["uid"] = f"uid-{self.uids}"
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.objects[(kind, name)] = obj
        self.log.append(f"create {kind} {name}")
        self.owners[(kind, name)] = [r["uid"] for r in obj["metadata"].get("ownerReferences", [])]
        if kind == "DaskCluster":
            self._operator(obj)
        if kind == "DaskAutoscaler":  # as the operator's: nothing waits, so down to the minimum
            self.scale_to(obj["spec"]["minimum"])
        if kind == "Job":
            self._job_controller(obj)
        return obj

    def _own(self, owner: dict[str, Any], kind: str, name: str, body: dict[str, Any]) -> None:
        ref = {
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
        }
        self.uids += 1
        body["metadata"] = {**body.get("metadata", {}), "name": name, "ownerReferences": [ref]}
        body["metadata"]["uid"] = f"uid-{self.uids}"
        self.objects[(kind, name)] = {"kind": kind, **body}

    def _operator(self, cluster: dict[str, Any]) -> None:
        name = cluster["metadata"]["name"]
        cluster["status"] = {"phase": "Running" if self.runs else "Pending"}
        self._pod(cluster, "scheduler", f"{name}-scheduler")
        for i in range(cluster["spec"]["worker"]["replicas"]):
            self._worker_pod(cluster, i)

    def _worker_pod(self, cluster: dict[str, Any], i: int) -> None:
        self._pod(cluster, "worker", f"{cluster['metadata']['name']}-default-worker-{i}")

    def _pod(self, cluster: dict[str, Any], component: str, dask_name: str) -> None:
        name = cluster["metadata"]["name"]
        ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        pull = {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "scheduler", "image": "ghcr.io/dask/dask:9999", "ready": False,
                 "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
            ],
        }  # fmt: skip
        labels = {"dask.org/cluster-name": name, "dask.org/component": component}
        spec = copy.deepcopy(cluster["spec"][component]["spec"])
        if component == "worker":  # as the operator's Deployment: a Dask name, a pod name
            spec["containers"][0].setdefault("env", []).append(
                {"name": "DASK_WORKER_NAME", "value": dask_name}
            )
        status = copy.deepcopy(ready if self.runs else pull)
        if self.runs:
            status["containerStatuses"] = [
                {"name": c["name"], "ready": True, "restartCount": 0, "state": {"running": {}}}
                for c in spec["containers"]
            ]
        pod = f"{dask_name}-5f7c9" if component == "worker" else dask_name
        body = {"metadata": {"labels": labels}, "spec": spec, "status": status}
        self._own(cluster, "Pod", pod, body)

    def scale_to(self, n: int) -> None:
        """As the operator scaling the default worker group: workers added or deleted."""
        workers = sorted(k for k in self.objects if k[0] == "Pod" and "-default-worker-" in k[1])
        for key in workers[n:]:
            del self.objects[key]
            self.log.append(f"scaled down {key[1]}")
        cluster = next(o for (k, _), o in self.objects.items() if k == "DaskCluster")
        for i in range(len(workers), n):
            self._worker_pod(cluster, i)

    def restart_container(self, pod: str, reason: str = "OOMKilled", code: int = 137) -> None:
        """As the kubelet: the pod's first container ended (OOM kill, crash) and runs again."""
        status = self.objects[("Pod", pod)]["status"]["containerStatuses"][0]
        status["restartCount"] += 1
        terminated = {"exitCode": code, "reason": reason, "containerID": f"c-{self.uids}"}
        self.uids += 1
        status["lastState"] = {"terminated": terminated}

    def evict(self, pod: str, message: str = "The node was low on resource: memory.") -> None:
        """As the kubelet evicting a pod: Failed, with the reason Evicted."""
        status = self.objects[("Pod", pod)]["status"]
        status.update(phase="Failed", reason="Evicted", message=message)

    def _job_controller(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        index = int(name.split("-")[2]) - 1  # ds-1-<index+1>-<step>
        labels = {"batch.kubernetes.io/job-name": name}
        state: dict[str, Any] = {"running": {}}
        if index in self.codes:
            code = self.codes[index]
            message = json.dumps(
                {"reason": "Completed" if code == 0 else "Error", "exit_code": code}
            )
            state = {"terminated": {"exitCode": code, "message": message}}
        status = {"containerStatuses": [{"name": "step", "state": state}]}
        self._own(job, "Pod", f"{name}-pod", {"metadata": {"labels": labels}, "status": status})

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def list(self, kind: str, namespace: str, labels: str = "", fields: str = "") -> list:
        wanted = dict(part.split("=", 1) for part in labels.split(",") if part)
        if kind == "Pod" and "batch.kubernetes.io/job-name" in wanted and self.on_step_poll:
            self.on_step_poll()
        return [
            copy.deepcopy(o)
            for (k, _), o in self.objects.items()
            if k == kind
            and all(o["metadata"].get("labels", {}).get(x) == v for x, v in wanted.items())
        ]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Foreground, as the garbage collector does it: dependents first, then the owner."""
        obj = self.objects.get((kind, name))
        if obj is None:
            return
        for (k, n), other in list(self.objects.items()):
            if any(
                r["uid"] == obj["metadata"]["uid"]
                for r in other["metadata"].get("ownerReferences", [])
            ):
                self.delete(k, namespace, n)
        del self.objects[(kind, name)]
        self.log.append(f"delete {kind} {name}")


class FakeLogShipper:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def start(self, sources: list[str]) -> None:
        self.log.append(f"logs start {' '.join(sources)}")

    def stop(self) -> None:
        self.log.append("logs stop")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daskstep.kube.step_launcher, "POLL_SECONDS", 0.01)


def run_on(
    server: FakeKubeServer, tmp_path: Path, timeout: float = 5.0, adapt: Adapt | None = None
) -> tuple[int, dict]:
    workflow = workflow_of(kerberos=True)
    options = KubeOptions(namespace="ns", run_id="ds-1", adapt=adapt is not None)
    backend = KubernetesBackend(server, options, workflow, "x")
    backend.poll_interval = 0.01
    run = Run(
        workflow,
        Workspace(tmp_path).new_run(),
        backend=backend,
        launcher=KubernetesStepLauncher(server, backend, workflow),
        logs=FakeLogShipper(server.log),
        start_timeout=timeout,
        adapt=adapt,
    )
    code = run.execute()
    return code, json.loads((tmp_path / ".daskstep" / "status.json").read_text())


def test_the_happy_path_creates_in_order_runs_each_step_and_deletes_the_root(tmp_path) -> None:
    server = FakeKubeServer(codes={0: 0, 1: 0})
    code, status = run_on(server, tmp_path)
    assert code == 0 and status["exit_code"] == 0
    created = [line for line in server.log if line.startswith("create")]
    assert created == [
        "create ConfigMap ds-1",
        "create ServiceAccount ds-1-logs",
        "create Role ds-1-logs",
        "create RoleBinding ds-1-logs",
        "create NetworkPolicy ds-1-fence",
        "create Secret ds-1-tls",
        "create DaskCluster ds-1",
        "create Job ds-1-1-fit-plot",
        "create Job ds-1-2-step-2",
    ]
    # every object after the root carries the root's uid, as the server gave it
    root_uid = "uid-1"
    assert server.owners.pop(("ConfigMap", "ds-1")) == []
    assert set(map(tuple, server.owners.values())) == {(root_uid,)}
    assert server.log[0] == "logs start job=" + str(tmp_path / ".daskstep/runs/1/raw/job.log*") + (
        " kubernetes:ns/daskstep.io/run=ds-1"
    )
    assert server.objects == {}, "the root's deletion took everything with it"
    assert server.log.index("delete ConfigMap ds-1") < server.log.index("logs stop")
    assert [s["exit_code"] for s in status["steps"]] == [0, 0]
    assert status["steps"][0]["reason"] == "Completed"


def test_a_cluster_that_never_runs_fails_naming_the_cause_and_is_deleted(tmp_path) -> None:
    server = FakeKubeServer(codes={0: 0}, runs=False)
    code, status = run_on(server, tmp_path, timeout=0.1)
    assert code == 69
    assert "cannot pull image ghcr.io/dask/dask:9999" in status["message"]
    assert not [line for line in server.log if "create Job" in line]
    assert server.objects == {}


def test_a_failed_job_gives_its_exit_code_and_the_next_step_does_not_run(tmp_path) -> None:
    server = FakeKubeServer(codes={0: 3, 1: 0})
    code, status = run_on(server, tmp_path)
    assert code == 3 and status["exit_code"] == 3
    assert status["steps"][0]["exit_code"] == 3 and status["steps"][0]["reason"] == "Error"
    assert "create Job ds-1-2-step-2" not in server.log
    assert server.objects == {}


def test_ctrl_c_during_a_step_deletes_its_job_then_the_root(tmp_path) -> None:
    server = FakeKubeServer(codes={})  # the step never ends by itself
    cancel_after = iter(range(3, -1, -1))

    def press_ctrl_c() -> None:
        if next(cancel_after, 0) == 0:
            signal.raise_signal(signal.SIGINT)

    server.on_step_poll = press_ctrl_c
    code, status = run_on(server, tmp_path)
    assert code == 130 and status["status"] == "cancelled"
    assert "delete Job ds-1-1-fit-plot" in server.log
    assert server.log.index("delete Job ds-1-1-fit-plot") < server.log.index(
        "delete ConfigMap ds-1"
    )
    assert server.objects == {}


def test_without_a_kubernetes_configuration_nothing_starts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml
    from test_kube_render import SPECS_DOC

    reana = tmp_path / "reana.yaml"
    reana.write_text(yaml.safe_dump({"workflow": SPECS_DOC}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path))
    daskstep = Path(sys.executable).parent / "daskstep"
    out = subprocess.run(
        [str(daskstep), "run", str(reana), "--backend", "kubernetes"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: KUBECONFIG: no usable Kubernetes configuration")
    assert not (tmp_path / ".daskstep").exists()


@pytest.mark.integration
def test_sigkill_of_daskstep_run_has_the_reaper_delete_the_root(tmp_path: Path) -> None:
    """The real CLI against the HTTP stand-in (it stores objects; no operator ever makes the
    cluster Running), killed while it waits: its reaper deletes the root, with no manual step."""
    import os
    import subprocess
    import sys
    import threading
    import time

    import psutil
    import yaml
    from test_kube_api import StandIn, write_kubeconfig
    from test_kube_render import SPECS_DOC

    server = StandIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.server_port, "t")
    reana = tmp_path / "reana.yaml"
    reana.write_text(yaml.safe_dump({"workflow": SPECS_DOC}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(kubeconfig)
    daskstep = Path(sys.executable).parent / "daskstep"
    argv = [str(daskstep), "run", str(reana), "--backend", "kubernetes"]
    argv += ["--namespace", "ns", "--run-id", "ds-kill", "--start-timeout", "120"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cluster_path = "/apis/kubernetes.dask.org/v1/namespaces/ns/daskclusters/ds-kill"
    root_path = "/api/v1/namespaces/ns/configmaps/ds-kill"
    try:
        deadline = time.monotonic() + 60
        while not any(r[:2] == ("GET", cluster_path) for r in list(server.requests)):
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline, "daskstep run never waited for its cluster"
            time.sleep(0.05)
        assert root_path in server.objects  # the root, and what it owns, exist
        run.kill()
        run.wait()
        t = time.monotonic()
        while root_path in server.objects:
            assert time.monotonic() - t < 15, "the root is still there 15 s after the SIGKILL"
            time.sleep(0.05)
        deleted = [r for r in server.requests if r[:2] == ("DELETE", root_path)]
        assert deleted and deleted[0][2]["propagationPolicy"] == "Foreground"

        def reapers() -> list[psutil.Process]:
            return [
                p for p in psutil.process_iter(["cmdline"])
                if "ns/ds-kill" in " ".join(p.info["cmdline"] or [])
            ]  # fmt: skip

        while reapers():
            assert time.monotonic() - t < 15, f"left running: {reapers()}"
            time.sleep(0.05)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        server.shutdown()
        server.server_close()
