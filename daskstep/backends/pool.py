"""A cluster's workers as adaptive scaling sees them (daskstep.adaptive.WorkerPool): what the
scheduler says (who is registered, how many it wants, whom it would lose first, and the
retirement itself, which moves a worker's data before it goes), and what the backend does (start
a worker, let one go for good). A backend daskstep starts itself mixes this in and says how it
adds a worker and how it stops restarting one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daskstep.words import plural


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
        while len(self.pool) < total:
            name = f"worker-{self.next_worker}"
            self.next_worker += 1
            self.pool.add(name)
            self.add_worker(name)

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
        try:  # the data each holds moves to the others first; then each closes itself
            if present:
                retired = self.ask_scheduler(
                    "retire_workers", timeout=60.0, names=present, close_workers=True, remove=True
                )
        finally:
            closed = {str(info.get("name")) for info in retired.values()}
            for name in present:
                if name not in closed:
                    self.let_go(name, retiring=False)  # kept: it would lose data
            gone |= closed
            self.pool -= gone
        return sorted(gone)
