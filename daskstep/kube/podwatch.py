"""What happens to a run's Dask pods while it lives, read from their status as the API server
gives it (the dicts of `sanitize_for_serialization`): a worker's container that restarted
(killed for memory, or exited), a worker's pod that is gone (deleted, evicted, failed), and
the scheduler's pod restarted or gone, which took the run's tasks and results with it.

Pure: pods in, events out, each said once. A container's end is said as soon as it shows,
in `state.terminated` (a crash-looping container waits there, its restartCount not yet
grown), or else in `lastState.terminated` once it restarted; both name the same container
by its containerID, so one end is one event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from daskstep.kube.objects import DASK_COMPONENT_LABEL

DASK_CONTAINER = {"scheduler": "scheduler", "worker": "worker"}  # as the operator names them
WORKER_NAME_ENV = "DASK_WORKER_NAME"  # the operator gives each worker its Dask name this way
RESTARTS = "; Kubernetes restarts it"


@dataclass(frozen=True)
class PodEvent:
    """One thing that happened to a pod, in the words of the other backends' events."""

    component: str  # "worker <its Dask name>" or "scheduler"
    what: str  # "lost" or "killed for memory (OOM)"
    why: str
    pod: str

    @property
    def scheduler(self) -> bool:
        return self.component == "scheduler"

    def message(self) -> str:
        """For a lost scheduler's error: the pod, then what happened."""
        return f"the scheduler pod {self.pod}: {self.what}: {self.why}"


def _labels(pod: dict[str, Any]) -> dict[str, str]:
    return (pod.get("metadata") or {}).get("labels") or {}


def _name(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("name") or "?"


def _uid(pod: dict[str, Any]) -> str:
    return (pod.get("metadata") or {}).get("uid") or _name(pod)


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("name", ""): c for c in (pod.get("spec") or {}).get("containers") or []}


def _dask_container(pod: dict[str, Any], component: str) -> str:
    """The Dask container's name: the operator's, else the pod's first container."""
    names = list(_containers(pod))
    wanted = DASK_CONTAINER[component]
    return wanted if wanted in names or not names else names[0]


def worker_name(pod: dict[str, Any]) -> str:
    """The worker's Dask name (the operator's DASK_WORKER_NAME), else its pod's name."""
    container = _containers(pod).get(_dask_container(pod, "worker")) or {}
    for env in container.get("env") or []:
        if env.get("name") == WORKER_NAME_ENV and env.get("value"):
            return str(env["value"])
    return _name(pod)


def _memory_limit(pod: dict[str, Any], container: str) -> str | None:
    resources = (_containers(pod).get(container) or {}).get("resources") or {}
    limit = (resources.get("limits") or {}).get("memory")
    return str(limit) if limit else None


def gone_words(pod: dict[str, Any]) -> str | None:
    """Why a pod will not run again (evicted, failed, ended, being deleted), or None."""
    status = pod.get("status") or {}
    name, reason, message = _name(pod), status.get("reason"), status.get("message")
    detail = f": {message}" if message else ""
    if reason == "Evicted":
        return f"its pod {name} was evicted{detail}"
    if status.get("phase") == "Failed":
        return f"its pod {name} failed ({reason or 'Failed'}){detail}"
    if status.get("phase") == "Succeeded":
        return f"its pod {name} ended"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return f"its pod {name} is being deleted"
    return None


def termination_words(
    terminated: dict[str, Any], container: str, dask_container: bool, limit: str | None
) -> tuple[str, str]:
    """(what, why) of one container's end, as the other backends say it."""
    reason = terminated.get("reason") or "Error"
    its = "its container" if dask_container else f"its {container} container"
    if reason == "OOMKilled":
        over = f"passed its memory limit of {limit}" if limit else "ran out of memory (no limit)"
        return "killed for memory (OOM)", f"{its} {over}"
    it = "it" if dask_container else its
    return "lost", f"{it} exited with {terminated.get('exitCode', '?')} ({reason})"


class PodWatch:
    """Remembers what it said about which pod, so that each end is one event. With the
    operator's DaskAutoscaler (`adaptive`), a worker pod that comes after the first look was
    scaled up, and one deleted or ended was retired (the operator asks the scheduler's
    retire_workers first): changes, said as such, not losses. Evicted or failed is lost."""

    def __init__(self, adaptive: bool = False) -> None:
        self.adaptive = adaptive
        self._looked = False
        self._said: set[tuple[str, str, str]] = set()  # (pod uid, container, which end)
        self._restarts: dict[tuple[str, str], int] = {}  # (pod uid, container) -> looked at
        self._live: dict[str, dict[str, Any]] = {}  # pod uid -> the pod as last seen
        self._gone: set[str] = set()  # pod uids said to be gone

    def look(self, pods: Iterable[dict[str, Any]]) -> list[PodEvent]:
        """What happened since the last look. A scheduler pod's restarts before its first look
        are history (the cluster got ready after them); a worker's are news all the same."""
        events: list[PodEvent] = []
        seen: set[str] = set()
        for pod in pods:
            if _labels(pod).get(DASK_COMPONENT_LABEL) not in DASK_CONTAINER:
                continue
            uid = _uid(pod)
            seen.add(uid)
            if uid in self._gone:
                continue
            first = uid not in self._live
            why = gone_words(pod)
            if why is not None:
                self._gone.add(uid)
                self._live.pop(uid, None)
                events.append(_event(pod, *self._gone_words(pod, why)))
                continue
            if first and self._looked and self.adaptive and _component(pod) == "worker":
                events.append(_event(pod, "started", "the DaskAutoscaler scaled up"))
            self._live[uid] = pod
            events += self._ends(pod, history=first and _component(pod) == "scheduler")
        for uid in [uid for uid in self._live if uid not in seen]:
            pod = self._live.pop(uid)
            self._gone.add(uid)
            events.append(_event(pod, *self._gone_words(pod, f"its pod {_name(pod)} was deleted")))
        self._looked = True
        return events

    def _gone_words(self, pod: dict[str, Any], why: str) -> tuple[str, str]:
        status = pod.get("status") or {}
        failed = status.get("phase") == "Failed" or status.get("reason") == "Evicted"
        if self.adaptive and _component(pod) == "worker" and not failed:
            return "retired", f"the DaskAutoscaler scaled down; {why}"
        return "lost", why

    def _ends(self, pod: dict[str, Any], history: bool) -> list[PodEvent]:
        """The ends of its containers not said yet."""
        component, uid = _component(pod), _uid(pod)
        dask_container = _dask_container(pod, component)
        events = []
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            container = status.get("name", "")
            restarts = int(status.get("restartCount") or 0)
            looked = self._restarts.get((uid, container), 0)
            self._restarts[(uid, container)] = max(looked, restarts)
            ends = [  # (the how-manieth end, how it ended); the running one's end is the next
                (restarts, (status.get("lastState") or {}).get("terminated")),
                (restarts + 1, (status.get("state") or {}).get("terminated")),
            ]
            for ordinal, terminated in ends:
                if not terminated:
                    continue
                mark = (uid, container, terminated.get("containerID") or f"#{ordinal}")
                if mark in self._said:
                    continue
                self._said.add(mark)
                exited_0 = terminated.get("exitCode") == 0 and terminated.get("reason") != (
                    "OOMKilled"
                )
                if (history and ordinal == restarts) or (exited_0 and component == "worker"):
                    continue  # before the cluster was ready; or a retired worker: no news
                limit = _memory_limit(pod, container)
                what, why = termination_words(
                    terminated, container, container == dask_container, limit
                )
                if restarts - looked > 1 and ordinal == restarts:
                    why += f" ({restarts - looked} restarts since the last look)"
                if component == "worker":
                    why += RESTARTS
                events.append(_event(pod, what, why))
        return events


def _component(pod: dict[str, Any]) -> str:
    return _labels(pod).get(DASK_COMPONENT_LABEL, "")


def _event(pod: dict[str, Any], what: str, why: str) -> PodEvent:
    component = _component(pod)
    who = f"worker {worker_name(pod)}" if component == "worker" else component
    return PodEvent(who, what, why, _name(pod))
