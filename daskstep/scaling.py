"""A cluster's workers as adaptive scaling sees them (daskstep.adaptive.WorkerPool): what the
scheduler says (who is registered, how many it wants, whom it would lose first, and the
retirement itself, which moves a worker's data before it goes), and what the backend does (start
a worker, let one go for good). A backend daskstep starts itself mixes this in and says how it
adds a worker and how it stops restarting one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daskstep.words import plural

API_ROUTE = "distributed.http.scheduler.api"  # /api/v1/adaptive_target, /api/v1/retire_workers


# distributed's default routes (the same since 2021) and its API, which they leave out: what
# scales a cluster over HTTP (the Docker backend; the dask-kubernetes operator, which without
# it scales down by deleting the newest pods, data and all: dask-kubernetes #807). A list of
# its own, not our distributed's configuration: the scheduler may run another version.
SCHEDULER_ROUTES = (
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.proxy",
    "distributed.http.statics",
    API_ROUTE,
)


def scheduler_routes() -> list[str]:
    return list(SCHEDULER_ROUTES)


@dataclass(frozen=True)
class Adapt:
    """How many workers an adaptive cluster keeps: REANA's DaskAutoscaler's two numbers."""

    minimum: int
    maximum: int


class SchedulerPool:
    """Mixed into a ClusterBackend (it brings `ask_scheduler`)."""

    pool: set[str]  # the workers asked for and not retired, by name
    next_worker = 0  # the number of the next worker's name

    if TYPE_CHECKING:  # ClusterBackend's: not defined here, or it would hide that one

        def ask_scheduler(self, op: str, timeout: float = 10.0, **arguments: Any) -> Any: ...

        def task_counts(self, timeout: float = 2.0) -> dict[str, int]: ...

    def add_worker(self, name: str) -> None:
        raise NotImplementedError

    def add_workers(self, names: list[str]) -> None:
        for name in names:
            self.add_worker(name)

    def let_go(self, name: str, retiring: bool) -> None:
        """Whether a worker's exit is for good (retiring) or to be restarted as usual."""
        raise NotImplementedError

    def requested(self) -> set[str]:
        return set(self.pool)

    def observed(self) -> set[str]:
        workers = self.ask_scheduler("identity", timeout=2.0).get("workers") or {}
        return {str(w.get("name")) for w in workers.values()}

    def wanted(self) -> int:
        return int(self.ask_scheduler("adaptive_target", timeout=2.0))

    def waiting(self) -> str:
        counts = self.task_counts()
        states = ("queued", "processing", "waiting", "no-worker")
        return f"{plural(sum(counts.get(state, 0) for state in states), 'task')} to run"

    def unneeded(self, n: int) -> list[str]:
        if n <= 0:
            return []
        names = self.ask_scheduler("workers_to_close", timeout=2.0, n=n, attribute="name")
        return [str(name) for name in names][:n]

    def scale_up(self, total: int) -> None:
        names = [f"worker-{self.next_worker + i}" for i in range(total - len(self.pool))]
        self.next_worker += len(names)
        self.pool.update(names)
        self.add_workers(names)

    def cancel_worker(self, name: str) -> bool:
        """Take back a worker that never registered (a batch job still queued): whether done."""
        return False

    def retire(self, names: list[str]) -> list[str]:
        registered = self.observed()
        gone = {n for n in names if n not in registered and self.cancel_worker(n)}
        present = [n for n in names if n in registered]
        for name in present:
            self.let_go(name, retiring=True)
        retired: dict[str, Any] = {}
        try:
            if present:
                retired = self.retire_registered(present)
        finally:
            closed = {str(info.get("name")) for info in retired.values()}
            for name in present:
                if name not in closed:
                    self.let_go(name, retiring=False)  # kept: it would lose data
            gone |= closed
            self.pool -= gone
        return sorted(gone)

    def retire_registered(self, names: list[str]) -> dict[str, Any]:
        """The data each holds moves to the others first; then each closes itself. What the
        scheduler retired, by address, each with its name."""
        return self.ask_scheduler(
            "retire_workers", timeout=60.0, names=names, close_workers=True, remove=True
        )
