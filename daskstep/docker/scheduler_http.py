"""The scheduler of a Docker run, through its HTTP server only: the image's own distributed may
be older or newer than ours, and Dask's RPC between versions is not safe, while the HTTP JSON
(`/json/identity.json`, `/json/counts.json`) and the scheduler's API (`/api/v1/...`, the route
`distributed.http.scheduler.api`, which the dask-kubernetes operator uses the same way) are.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

BUSY = ("executing", "ready", "constrained", "long-running", "waiting", "flight")


class SchedulerHTTP:
    def __init__(self, base: str) -> None:
        self.base = base  # http://HOST:PORT of the scheduler's dashboard server

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any], timeout: float) -> Any:
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def identity(self) -> dict[str, Any]:
        return self.get("/json/identity.json")

    def counts(self, timeout: float) -> dict[str, int]:
        """Its `memory` counts the results held on workers (a replica twice), and an older
        scheduler names no `erred`: 0."""
        counts = self.get("/json/counts.json", timeout)
        states = ("processing", "waiting", "memory", "erred", "released")
        return {state: int(counts.get(state) or 0) for state in states}

    def to_run(self) -> int:
        """Tasks not yet done: the counts name no `queued`, so all tasks less those held in
        memory, released or erred (a key held twice counts twice: never more than there are)."""
        c = self.get("/json/counts.json", 2.0)
        done = sum(int(c.get(state) or 0) for state in ("memory", "released", "erred"))
        busy = int(c.get("processing") or 0) + int(c.get("waiting") or 0)
        return max(int(c.get("tasks") or 0) - done, busy)

    def adaptive_target(self) -> int:
        return int(self.get("/api/v1/adaptive_target", 2.0)["workers"])

    def retire(self, addresses: list[str], timeout: float) -> dict[str, Any]:
        """The scheduler's `retire_workers`: each one's data moves to the others first; the
        workers it retired, by address (each closes itself once it is out)."""
        return self.post("/api/v1/retire_workers", {"workers": addresses}, timeout)


def cheapest(workers: dict[str, Any], n: int) -> list[str]:
    """The `n` workers that are cheapest to lose, by name: idle before busy, then the fewest
    bytes held (what the scheduler's `workers_to_close` weighs, read from the identity)."""

    def cost(info: dict[str, Any]) -> tuple[int, int, str]:
        metrics = info.get("metrics") or {}
        counts = metrics.get("task_counts") or metrics  # older workers: flat counts
        busy = sum(int(counts.get(state) or 0) for state in BUSY)
        held = int(metrics.get("managed_bytes") or metrics.get("memory") or 0)
        return (busy > 0, held, str(info.get("name")))

    return [str(info.get("name")) for info in sorted(workers.values(), key=cost)[: max(n, 0)]]
