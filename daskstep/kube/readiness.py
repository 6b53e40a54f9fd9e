"""Waiting for a run's DaskCluster, as the API server sees it: the operator's `status.phase`
Running, the scheduler pod ready and as many worker pods ready as asked for. The controller may
run outside the cluster, where the scheduler's ClusterIP cannot be reached, so it never asks
the scheduler itself. On timeout the error says what is pending, in the pods' own words."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from daskstep.errors import Cancelled, ClusterError, TooFewWorkers
from daskstep.kube.api import KubeAPI
from daskstep.kube.objects import DASK_CLUSTER_LABEL, DASK_COMPONENT_LABEL, KubeOptions
from daskstep.kube.pending import why_not_ready
from daskstep.words import plural
from sidecar.lifecycle import StopSignal

POLL_SECONDS = 1.0
REASONS_SHOWN = 3


def _component(pod: dict[str, Any]) -> str:
    return (pod.get("metadata", {}).get("labels") or {}).get(DASK_COMPONENT_LABEL, "")


def _reasons(api: KubeAPI, namespace: str, pods: list[dict[str, Any]]) -> list[str]:
    reasons = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "")
        events = api.list("Event", namespace, fields=f"involvedObject.name={name}")
        reason = why_not_ready(pod, events)
        if reason is not None:
            reasons.append(reason)
    return reasons


def wait_running(
    api: KubeAPI,
    options: KubeOptions,
    workers: int,
    timeout: float,
    cancel: StopSignal | None = None,
    poll: float = POLL_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """The number of ready workers once all are; ClusterError (69) or TooFewWorkers (75)."""
    cancel = cancel or StopSignal()
    deadline = time.monotonic() + timeout
    name, namespace = options.cluster_name, options.namespace
    while True:
        cluster = api.get("DaskCluster", namespace, name)
        phase = ((cluster or {}).get("status") or {}).get("phase") or "not yet seen"
        pods = api.list("Pod", namespace, labels=f"{DASK_CLUSTER_LABEL}={name}")
        ready = [p for p in pods if why_not_ready(p) is None]
        scheduler_ready = any(_component(p) == "scheduler" for p in ready)
        ready_workers = sum(_component(p) == "worker" for p in ready)
        if progress is not None:
            progress(ready_workers, workers)
        if phase == "Running" and scheduler_ready and ready_workers >= workers:
            return ready_workers
        if time.monotonic() >= deadline:
            break
        if cancel.wait(poll):
            raise Cancelled(cancel.signum or signal.SIGTERM)
    waiting = [p for p in pods if why_not_ready(p) is not None]
    reasons = _reasons(api, namespace, waiting)[:REASONS_SHOWN] or [
        "no pods yet (is the dask-kubernetes operator installed and watching this namespace?)"
    ]
    what = f"DaskCluster {name} is {phase}, {ready_workers}/{plural(workers, 'worker')} ready"
    message = f"{what} after {timeout:g} s: " + "; ".join(reasons)
    if scheduler_ready and phase == "Running":
        raise TooFewWorkers(message)
    raise ClusterError(message)
