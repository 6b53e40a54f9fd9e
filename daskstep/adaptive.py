"""Adaptive scaling for the clusters daskstep starts itself (local, Slurm, HTCondor): one policy,
distributed's own (`AdaptiveCore`: the minimum and maximum, and `wait_count`, a worker is
retired only after that many looks in a row found it unneeded), driven from the run loop
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

import contextlib
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from distributed.deploy.adaptive_core import AdaptiveCore

from daskstep.backends.base import Report
from daskstep.scaling import Adapt
from daskstep.words import plural

WAIT_COUNT = 3  # looks in a row before a worker goes, as distributed's Adaptive: ~3 s idle
HOLD = 5.0  # seconds after a step starts without a scale-down


class WorkerPool(Protocol):
    """A backend's side: its workers by name, started and retired on request, and what its
    scheduler says (the scheduler decides how many and whom, as for distributed's Adaptive)."""

    def requested(self) -> set[str]:
        """Workers asked for and not stopped: started, starting, or pending in a queue."""

    def observed(self) -> set[str]:
        """Workers registered with the scheduler now."""

    def wanted(self) -> int:
        """The scheduler's `adaptive_target`: how many workers the work in it asks for."""

    def waiting(self) -> str:
        """The work waiting, in words, for a scale-up's event."""

    def unneeded(self, n: int) -> list[str]:
        """The scheduler's `workers_to_close`: the `n` workers cheapest to lose."""

    def scale_up(self, total: int) -> None:
        """Ask for workers until `total` are requested."""

    def retire(self, names: list[str]) -> list[str]:
        """Retire these through the scheduler (their data moves first), then stop them; the
        names actually retired."""


class Autoscaler(AdaptiveCore):
    def __init__(
        self,
        pool: WorkerPool,
        limits: Adapt,
        report: Report,
        wait_count: int = WAIT_COUNT,
        hold: float = HOLD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= limits.minimum <= limits.maximum:
            raise ValueError(
                f"need 0 <= minimum <= maximum, got {limits.minimum} and {limits.maximum}"
            )
        super().__init__(minimum=limits.minimum, maximum=limits.maximum, wait_count=wait_count)
        self.pool = pool
        self.report = report
        self.hold = hold
        self.clock = clock
        self.held_until = -math.inf
        self.since: dict[str, float] = {}  # when each worker was first found unneeded
        self._observed: set[str] | None = None  # asked once per look: one call, not six

    # -- the state distributed's policy reads ------------------------------------------------
    @property
    def plan(self) -> set[str]:  # type: ignore[override]
        return self.pool.requested() | self.observed

    @property
    def requested(self) -> set[str]:  # type: ignore[override]
        return self.pool.requested()

    @property
    def observed(self) -> set[str]:  # type: ignore[override]
        if self._observed is None:
            self._observed = self.pool.observed()
        return self._observed

    async def target(self) -> int:
        return self.pool.wanted()

    async def workers_to_close(self, target: int) -> list:
        """Whom the scheduler would lose first (the policy already took those that never
        arrived); each remembered from when it was first unneeded, for the event's words."""
        names = self.pool.unneeded(max(len(self.plan) - target, 0))
        now = self.clock()
        self.since = {n: self.since.get(n, now) for n in names}
        return names

    async def recommendations(self, target: int) -> dict:
        if target < len(self.plan) and self.clock() < self.held_until:
            self.close_counts.clear()  # a step just started: its graph may not be in yet
            return {"status": "same"}
        return await super().recommendations(target)

    async def scale_up(self, n: int) -> None:  # type: ignore[override]
        before = len(self.plan)
        self.pool.scale_up(n)
        self.since.clear()
        why = f"from {before}; {self.pool.waiting()}"
        self.report("cluster", f"scaled up to {plural(n, 'worker')}", why)

    async def scale_down(self, workers: Iterable[str]) -> None:  # type: ignore[override]
        names = sorted(workers)
        now = self.clock()
        for name in self.pool.retire(names):
            if name in self.since:
                why = f"not needed for {now - self.since.pop(name):.0f} s; its data moved first"
            else:
                why = "asked for, and no longer needed before it came"
            self.report(f"worker {name}", "retired", why)

    # -- driven from the run loop ------------------------------------------------------------
    def step_started(self) -> None:
        self.held_until = self.clock() + self.hold

    def look(self) -> None:
        """One look, at most one change (distributed's `adapt`). A scheduler that does not
        answer is the backend's to judge (check_alive): this look is skipped."""
        self._observed = None
        with contextlib.suppress(Exception):
            run_through(self.adapt())


def run_through(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits (distributed's policy awaits only our methods, which
    ask the scheduler synchronously): without an event loop, so the pool's own calls may
    start theirs."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the adaptive policy waited on something")
