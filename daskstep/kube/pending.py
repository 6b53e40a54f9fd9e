"""Why a run's pods are not ready yet, in words a user can act on, read from the pods' own
status and their events: an image that cannot be pulled, a pod nothing can schedule, a
container that keeps crashing, a credential sidecar that never got ready."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WAITING_WORDS = {
    "ErrImagePull": "cannot pull image",
    "ImagePullBackOff": "cannot pull image",
    "InvalidImageName": "invalid image name",
    "CrashLoopBackOff": "keeps crashing",
    "CreateContainerConfigError": "cannot be created (a missing Secret or ConfigMap?)",
}


def _name(pod: dict[str, Any]) -> str:
    return pod.get("metadata", {}).get("name", "?")


def why_not_ready(pod: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> str | None:
    """One line naming the pod and its first reason, or None when it is ready."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if conditions.get("Ready", {}).get("status") == "True":
        return None
    name = _name(pod)
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False":
        why = scheduled.get("message") or scheduled.get("reason") or "no node fits it"
        return f"pod {name}: unschedulable: {why}"
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for container in statuses:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in WAITING_WORDS:
            image = container.get("image", "")
            detail = f" {image}" if "image" in WAITING_WORDS[reason] and image else ""
            message = waiting.get("message", "")
            tail = f": {message}" if message and reason != "CrashLoopBackOff" else ""
            restarts = container.get("restartCount", 0)
            count = f" ({restarts} restarts)" if reason == "CrashLoopBackOff" else ""
            return (
                f"pod {name}: container {container.get('name')} {WAITING_WORDS[reason]}"
                f"{detail}{count} ({reason}){tail}"
            )
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            return (
                f"pod {name}: container {container.get('name')} exited with "
                f"{terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
            )
    for container in statuses:
        if not container.get("ready") and "running" in (container.get("state") or {}):
            return f"pod {name}: container {container.get('name')} is running but not ready"
    warnings = [e for e in events if e.get("type") == "Warning"]
    if warnings:
        last = warnings[-1]
        return f"pod {name}: {last.get('reason')}: {last.get('message')}"
    phase = status.get("phase") or "Pending"
    return f"pod {name}: {phase}"
