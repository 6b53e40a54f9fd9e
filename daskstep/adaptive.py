"""Adaptive scaling for the clusters daskstep starts itself (local, Docker, Slurm, HTCondor): one
policy, distributed's own (`AdaptiveCore`: the minimum and maximum, and `wait_count`, a worker
is retired only after that many looks in a row found it unneeded), driven from the run loop
through a backend's `WorkerPool`.

Where the peers go wrong, this does not:
- the maximum counts workers still starting (a pending batch job is in the plan), so a slow
  queue does not make it ask again and again (REANA #830, dask-jobqueue #498);
- scale-down goes through the scheduler's `retire_workers` (the pool's `retire`), which moves a
  worker's data first: no task is recomputed because of it (dask-kubernetes #633);
- a worker is retired only after `wait_count` looks in a row wanted fewer workers, and none in
  the first `hold` seconds after a step starts, while it is still submitting its graph;
- every change is an event, with why (`scaled up to 5`, `120 tasks waiting`).

Kubernetes gets the operator's DaskAutoscaler instead (kube/), with the same limits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from distributed.deploy.adaptive_core import AdaptiveCore

from daskstep.backends.base import Report
from daskstep.words import plural

INTERVAL = 1.0  # seconds between looks, as distributed's Adaptive
WAIT_COUNT = 10  # looks in a row before a worker goes: an idle worker is gone within ~10 s
HOLD = 5.0  # seconds after a step starts without a scale-down


@dataclass(frozen=True)
class Target:
    """What the scheduler wants: a number of workers, and why (said with a change)."""

    workers: int
    why: str


class WorkerPool(Protocol):
    """A backend's side: its workers by name, started and retired on request."""

    def requested(self) -> set[str]:
        """Workers asked for and not stopped: started, starting, or pending in a queue."""

    def observed(self) -> set[str]:
        """Workers registered with the scheduler now."""

    def scale_up(self, total: int) -> None:
        """Ask for workers until `total` are requested."""

    def retire(self, names: list[str]) -> list[str]:
        """Retire these through the scheduler (their data moves first), then stop them; the
        names actually retired."""

    def idle_seconds(self, name: str) -> float | None:
        """How long a worker has run nothing (for the event's words), None if unknown."""


class Autoscaler(AdaptiveCore):
    def __init__(
        self,
        pool: WorkerPool,
        target: Callable[[], Target],
        report: Report,
        minimum: int,
        maximum: int,
        wait_count: int = WAIT_COUNT,
        hold: float = HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= minimum <= maximum:
            raise ValueError(f"need 0 <= minimum <= maximum, got {minimum} and {maximum}")
        super().__init__(minimum=minimum, maximum=maximum, wait_count=wait_count)
        self.pool = pool
        self.ask = target
        self.report = report
        self.hold = hold
        self.clock = clock
        self.held_until = -math.inf
        self.last: Target | None = None

    # -- the state distributed's policy reads ------------------------------------------------
    @property
    def plan(self) -> set[str]:  # type: ignore[override]
        return self.pool.requested() | self.pool.observed()

    @property
    def requested(self) -> set[str]:  # type: ignore[override]
        return self.pool.requested()

    @property
    def observed(self) -> set[str]:  # type: ignore[override]
        return self.pool.observed()

    async def target(self) -> int:
        self.last = self.ask()
        return self.last.workers

    async def workers_to_close(self, target: int) -> list:
        """The longest idle first (the policy already took those that never arrived)."""
        arrived = sorted(self.observed, key=lambda n: -(self.pool.idle_seconds(n) or 0.0))
        return arrived[: max(len(self.plan) - target, 0)]

    async def recommendations(self, target: int) -> dict:
        if target < len(self.plan) and self.clock() < self.held_until:
            self.close_counts.clear()  # a step just started: its graph may not be in yet
            return {"status": "same"}
        return await super().recommendations(target)

    async def scale_up(self, n: int) -> None:  # type: ignore[override]
        before = len(self.plan)
        self.pool.scale_up(n)
        why = self.last.why if self.last else ""
        self.report("cluster", f"scaled up to {plural(n, 'worker')}", f"from {before}; {why}")

    async def scale_down(self, workers: Iterable[str]) -> None:  # type: ignore[override]
        names = sorted(workers)
        idle = {n: self.pool.idle_seconds(n) for n in names}
        for name in self.pool.retire(names):
            seconds = idle.get(name)
            why = f"idle {seconds:.0f} s" if seconds is not None else "not needed"
            self.report(f"worker {name}", "retired", f"{why}; its data moved first")

    # -- driven from the run loop ------------------------------------------------------------
    def step_started(self) -> None:
        self.held_until = self.clock() + self.hold

    def look(self) -> None:
        """One look: at most one change (distributed's `adapt`)."""
        asyncio.run(self.adapt())
