"""Waiting for a DaskCluster, driven by a fake of the thin API layer that plays back what an
API server would show over time (the real layer is tested against an HTTP stand-in)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from daskstep.errors import Cancelled, ClusterError, TooFewWorkers
from daskstep.kube.objects import KubeOptions
from daskstep.kube.readiness import wait_running
from sidecar.lifecycle import StopSignal

OPTIONS = KubeOptions(namespace="ns", run_id="ds-1")


def pod(name: str, component: str, ready: bool, **status: Any) -> dict[str, Any]:
    labels = {"dask.org/cluster-name": "ds-1", "dask.org/component": component}
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"phase": "Running" if ready else "Pending", "conditions": conditions, **status},
    }


PULL = {
    "containerStatuses": [
        {
            "name": "worker",
            "image": "ghcr.io/dask/dask:9999",
            "ready": False,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
        }
    ]
}


class FakeKubeAPI:
    """Each poll (a get of the DaskCluster) moves to the next frame; the last one stays."""

    def __init__(self, frames: list[tuple[str | None, list[dict[str, Any]]]]) -> None:
        self.frames = frames
        self.at = -1
        self.calls: list[tuple[str, ...]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        self.at = min(self.at + 1, len(self.frames) - 1)
        phase = self.frames[self.at][0]
        return None if phase is None else {"kind": kind, "status": {"phase": phase}}

    def list(self, kind: str, namespace: str, labels: str = "", fields: str = "") -> list:
        self.calls.append(("list", kind, labels or fields))
        if kind == "Event":
            return [{"type": "Warning", "reason": "Failed", "message": "pull access denied"}]
        return self.frames[self.at][1]


def test_it_returns_once_running_with_every_worker_ready() -> None:
    scheduler = pod("s", "scheduler", True)
    workers = [pod(f"w{i}", "worker", True) for i in range(3)]
    api = FakeKubeAPI(
        [
            (None, []),
            ("Pending", [pod("s", "scheduler", False)]),
            ("Running", [scheduler, *workers[:2], pod("w2", "worker", False)]),
            ("Running", [scheduler, *workers]),
        ]
    )
    assert wait_running(api, OPTIONS, 3, timeout=10, poll=0.001) == 3
    assert api.at == 3
    assert ("list", "Pod", "dask.org/cluster-name=ds-1") in api.calls


def test_a_cluster_that_never_runs_times_out_naming_the_cause() -> None:
    api = FakeKubeAPI(
        [("Pending", [pod("s", "scheduler", True), pod("w0", "worker", False, **PULL)])]
    )
    with pytest.raises(ClusterError) as caught:
        wait_running(api, OPTIONS, 2, timeout=0.05, poll=0.001)
    message = str(caught.value)
    assert caught.value.exit_code == 69 and "\n" not in message
    assert message.startswith("DaskCluster ds-1 is Pending, 0/2 workers ready after 0.05 s: ")
    assert "pod w0: container worker cannot pull image ghcr.io/dask/dask:9999" in message


def test_a_running_cluster_short_of_workers_is_too_few_workers() -> None:
    api = FakeKubeAPI([("Running", [pod("s", "scheduler", True), pod("w0", "worker", True),
                                    pod("w1", "worker", False)])])  # fmt: skip
    with pytest.raises(TooFewWorkers) as caught:
        wait_running(api, OPTIONS, 2, timeout=0.05, poll=0.001)
    assert caught.value.exit_code == 75
    assert "1/2 workers ready" in str(caught.value) and "pod w1: " in str(caught.value)


def test_no_pods_at_all_points_at_the_operator() -> None:
    with pytest.raises(ClusterError, match="is the dask-kubernetes operator installed"):
        wait_running(FakeKubeAPI([(None, [])]), OPTIONS, 1, timeout=0.05, poll=0.001)


def test_ctrl_c_while_waiting_is_cancelled() -> None:
    cancel = StopSignal()
    threading.Timer(0.1, cancel.received, args=(signal.SIGINT,)).start()
    with pytest.raises(Cancelled) as caught:
        wait_running(FakeKubeAPI([("Pending", [])]), OPTIONS, 1, timeout=30, cancel=cancel)
    assert caught.value.exit_code == 130
