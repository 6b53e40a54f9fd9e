"""What runs inside the schedulers and workers daskstep starts itself (the local launcher's,
and the batch backend's scheduler): their side of the run's TLS, and an op of our own."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def security_of(tls: str | None) -> Any:
    """The cluster's side of the run's TLS (scheduler and workers both), from the run's TLS
    folder, or None for TCP."""
    if not tls:
        return None
    from pathlib import Path

    from daskstep.tls import RunTLS

    return RunTLS(Path(tls)).security("cluster")


TASK_COUNTS_OP = "daskstep_task_counts"


def task_counts(scheduler: Any) -> dict[str, int]:
    """Every state's count over the task prefixes (queued included, which the scheduler's
    `get_task_prefix_states` leaves out: most of a large map waits there), and `done`, the
    running total of tasks that reached memory. An op of our own, not `run_function`, which
    would log a line in the scheduler's log every second."""
    totals: dict[str, int] = {}
    done = 0
    for prefix in scheduler.task_prefixes.values():
        for state, n in prefix.states.items():
            totals[state] = totals.get(state, 0) + n
        done += prefix.state_counts.get("memory", 0)
    totals["done"] = done
    return totals


WORKERS_OP = "daskstep_workers"
WORKERS_LOOK_SECONDS = 0.005


async def workers_when(scheduler: Any, at_least: int, seen: int, wait: float) -> int:
    """The count of workers, answered as soon as it reaches `at_least` or differs from `seen`
    (or after `wait` seconds): a cluster is ready the moment its last worker registers, not at
    the controller's next poll, which came 50-100 ms later."""
    deadline = time.monotonic() + wait
    while (n := len(scheduler.workers)) < at_least and n == seen:
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(WORKERS_LOOK_SECONDS)
    return n
