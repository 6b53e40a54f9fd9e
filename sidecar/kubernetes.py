"""Kubernetes pod logs into the store, through a thin client layer that tests replace with a fake.

Pods are found by label. The dask-kubernetes operator labels the pods of a cluster
`dask.org/cluster-name=<cluster>` and `dask.org/component=scheduler|worker|job-runner`;
the source follows the pods that any of its label selectors match, and a pod without the
operator's component label is the job's (a REANA job, not the operator's).
Streams: the scheduler pod → `scheduler`, each worker pod → `worker/<pod name>`, job pods
(and a DaskJob's `job-runner` pod) → `job`.

One container per pod is followed, so that each stream has one writer and stays in time
order: in scheduler and worker pods the Dask container (named `scheduler` / `worker` as the
operator's and daskstep's manifests name it, else the first one); in job pods `job_container`,
else the first container (the step; sidecars such as this one come after it).

Limits of the API: a deleted pod's log is gone, and the kubelet keeps only one previous
instance of a restarted container, so restarts while the sidecar is down lose all but the last.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.follow import FollowingSource, LogResponse, Target

CLUSTER_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
COMPONENT_OF_LABEL = {"scheduler": "scheduler", "worker": "worker", "job-runner": "job"}
DASK_CONTAINER = {"scheduler": "scheduler", "worker": "worker"}
LIVE_PHASES = ("Pending", "Running", "Unknown")


@dataclass(frozen=True)
class PodInfo:
    name: str
    uid: str
    labels: Mapping[str, str]
    containers: tuple[str, ...]  # spec order
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    created_ns: int = 0
    restarts: Mapping[str, int] = field(default_factory=dict)  # container name → restartCount


class PodLogClient(Protocol):
    """The two calls the source needs; the real one is `KubernetesPodLogClient`."""

    def list_pods(self, namespace: str, label_selector: str) -> list[PodInfo]: ...

    def read_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        since_ns: int | None,
        follow: bool,
        previous: bool = False,
    ) -> LogResponse:
        """The container's log with `timestamps=True`, from `since_ns` (or earlier) on."""
        ...


class _HTTPLog:
    """A streamed urllib3 response, as the HTTP chunks arrive."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        chunked = getattr(self._response, "chunked", False)
        yield from self._response.stream(amt=None if chunked else 64 << 10, decode_content=True)

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class KubernetesPodLogClient:
    """`PodLogClient` on the official `kubernetes` client.

    The Python client has no `sinceTime` (its OpenAPI spec lacks it; kubernetes-client/python
    #1351), only `sinceSeconds`, relative to the kubelet's clock. So it asks for whole seconds
    back to `since_ns` plus `clock_skew_s`: more than needed, never less if the clocks differ
    by less than that; the source drops the surplus.
    """

    def __init__(
        self,
        api: Any = None,
        *,
        clock_skew_s: int = 30,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.api = api if api is not None else _core_api()
        self.clock_skew_s = clock_skew_s
        self.timeout = (connect_timeout, read_timeout)  # an idle stream is asked again after this

    def list_pods(self, namespace: str, label_selector: str) -> list[PodInfo]:
        pods = self.api.list_namespaced_pod(
            namespace, label_selector=label_selector, _request_timeout=self.timeout
        )
        return [_pod_info(pod) for pod in pods.items]

    def read_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        since_ns: int | None,
        follow: bool,
        previous: bool = False,
    ) -> LogResponse:
        options: dict[str, Any] = {}
        if since_ns:
            back = math.ceil((time.time_ns() - since_ns) / 1e9)
            options["since_seconds"] = max(1, back + self.clock_skew_s)
        if previous:
            options["previous"] = True
        response = self.api.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            follow=follow,
            timestamps=True,
            _preload_content=False,
            _request_timeout=self.timeout,
            **options,
        )
        return _HTTPLog(response)


def _core_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.CoreV1Api()


def _pod_info(pod: Any) -> PodInfo:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    statuses = (status.container_statuses if status else None) or []
    created = meta.creation_timestamp
    return PodInfo(
        name=meta.name,
        uid=meta.uid,
        labels=dict(meta.labels or {}),
        containers=tuple(c.name for c in spec.containers),
        phase=(status.phase if status else None) or "Unknown",
        created_ns=int(created.timestamp() * 1e9) if created else 0,
        restarts={s.name: s.restart_count or 0 for s in statuses},
    )


class KubernetesSource(FollowingSource):
    """The pods any of `selectors` match in `namespace`: a Dask cluster and the job using it."""

    def __init__(
        self,
        client: PodLogClient,
        namespace: str,
        selectors: Sequence[str],
        *,
        job_container: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client = client
        self.namespace = namespace
        self.selectors = tuple(selectors)
        self.job_container = job_container
        self.key = f"kubernetes:{namespace}/{'|'.join(self.selectors)}"

    def discover(self) -> list[Target]:
        pods = {p.uid: p for s in self.selectors for p in self.client.list_pods(self.namespace, s)}
        targets = []
        for pod in pods.values():
            # the operator's label names scheduler and worker pods; every other pod is the job's
            component = COMPONENT_OF_LABEL.get(pod.labels.get(COMPONENT_LABEL, ""), "job")
            if not pod.containers:
                continue
            container = self._container(pod, component)
            targets.append(
                Target(
                    component=component,
                    name=pod.name if component == "worker" else None,
                    key=f"{pod.uid}/{container}",
                    order=(pod.created_ns, pod.name),
                    readable=pod.phase != "Pending",
                    running=pod.phase in LIVE_PHASES,
                    ref=(pod.name, container),
                    restarts=pod.restarts.get(container, 0),
                )
            )
        return targets

    def _container(self, pod: PodInfo, component: str) -> str:
        wanted = self.job_container if component == "job" else DASK_CONTAINER[component]
        return wanted if wanted in pod.containers else pod.containers[0]

    def log_parts(self, target: Target) -> list[bool]:
        """After a restart, first the previous instance: it may hold lines the store lacks."""
        return [True, False] if target.restarts else [False]

    def open_log(
        self, target: Target, since_ns: int | None, *, previous: bool, follow: bool
    ) -> LogResponse:
        pod, container = target.ref
        return self.client.read_log(
            self.namespace, pod, container, since_ns=since_ns, follow=follow, previous=previous
        )
