"""Watching the cluster through its scheduler, beside each backend's own view of its
processes, containers or jobs: what only the scheduler knows. A worker paused for memory (its
tasks wait), and fewer workers than asked for longer than a grace period (a worker lost and not
back). Each is one event, said once when it starts and once when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dask.utils import format_bytes

from daskstep.backends.base import Report
from daskstep.words import plural

GRACE_SECONDS = 30.0  # fewer workers than asked for this long is news (a restart takes ~1 s)
LOOK_SECONDS = 1.0


class SchedulerWatch:
    def __init__(
        self,
        ask: Callable[[], dict[str, Any]],
        wanted: int,
        report: Report,
        grace: float = GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ask = ask  # the scheduler's identity, or an exception when it does not answer
        self.wanted = wanted
        self.report = report
        self.grace = grace
        self.clock = clock
        self.paused: set[str] = set()
        self.short_since: float | None = None
        self.said_short = False
        self.next_look = 0.0

    def poll(self) -> None:
        """At most once a second; a scheduler that does not answer is the backend's to judge."""
        if self.clock() < self.next_look:
            return
        self.next_look = self.clock() + LOOK_SECONDS
        try:
            identity = self.ask()
        except Exception:
            return
        self.look(identity)

    def look(self, identity: dict[str, Any]) -> None:
        if "workers" not in identity:  # no answer (the Docker backend's HTTP identity)
            return
        workers = list((identity.get("workers") or {}).values())
        paused = {str(w.get("name")): w for w in workers if w.get("status") == "paused"}
        for name in sorted(set(paused) - self.paused):
            worker = paused[name]
            memory = (worker.get("metrics") or {}).get("memory")
            limit = worker.get("memory_limit")
            why = "it stopped taking tasks until memory is spilled or freed"
            if memory and limit:
                why = f"it holds {format_bytes(memory)} of its {format_bytes(limit)} limit; " + why
            self.report(f"worker {name}", "paused for memory", why)
        present = {str(w.get("name")) for w in workers}
        for name in sorted((self.paused - set(paused)) & present):
            self.report(f"worker {name}", "running again", "its memory went back under the limit")
        self.paused = set(paused)
        self._count(len(workers))

    def _count(self, n: int) -> None:
        now = self.clock()
        if n >= self.wanted:
            if self.said_short:
                self.report("cluster", "workers back", f"{n} of {plural(self.wanted, 'worker')}")
            self.short_since, self.said_short = None, False
            return
        if self.short_since is None:
            self.short_since = now
        if not self.said_short and now - self.short_since >= self.grace:
            self.said_short = True
            self.report(
                "cluster",
                "too few workers",
                f"{n} of {plural(self.wanted, 'worker')} for {self.grace:g} s; tasks run slower",
            )
