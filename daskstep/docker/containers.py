"""What the Docker backend and its step launcher (step_launcher.py) share: the labels that
mark a run's containers, and how they are removed (on every path, by the reaper, or by
`daskstep gc`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daskstep.procutil import controller_alive, controller_mark
from sidecar.docker_logs import COMPONENT_LABEL, RUN_LABEL, WORKER_LABEL

__all__ = ["COMPONENT_LABEL", "RUN_LABEL", "WORKER_LABEL", "listed"]

CONTROLLER_LABEL = "daskstep.controller"  # host:pid of the daskstep run that made it


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
