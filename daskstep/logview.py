"""`daskstep logs`: print one run's store, during the run or after it, and follow it live.

Lines are read by sequence number from each stream's index, never compared by content, so a line
identical to an earlier one is still shown (REANA's follow drops those).
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from daskstep.errors import InputError, Problem
from daskstep.record import RunFolder, run_ended
from sidecar.store import Line, read_lines

FOLLOW_INTERVAL = 0.2


class View:
    def __init__(
        self,
        run: RunFolder,
        component: str | None = None,
        worker: str | None = None,
        since: int = 0,
        numbers: bool = False,
    ) -> None:
        self.run = run
        self.root = run.logs
        if worker and component not in (None, "worker"):
            raise InputError([Problem("--worker", "only goes with --component worker")])
        self.component = "worker" if worker else component
        self.worker = worker
        self.position: dict[Path, int] = {}
        self.since = since
        self.numbers = numbers  # each line's sequence number, as --since takes it

    def workers(self) -> list[str]:
        return sorted(path.stem for path in (self.root / "workers").glob("*.log"))

    def check_worker(self) -> None:
        """A worker the run never had is a mistake to say, not an empty answer; one that may
        still come (the run goes on) is waited for."""
        if self.worker is None or self.worker in self.workers() or not run_ended(self.run):
            return
        known = ", ".join(self.workers()) or "none"
        message = f"{self.run.name} has no worker {self.worker}; its workers: {known}"
        raise InputError([Problem("--worker", message)])

    def streams(self) -> dict[Path, str]:
        """The store files to show, with their labels; workers may appear during the run."""
        found: dict[Path, str] = {}
        if self.component in (None, "job"):
            found[self.root / "job.log"] = "job"
        if self.component in (None, "scheduler"):
            found[self.root / "scheduler.log"] = "scheduler"
        if self.component in (None, "engine") and (self.root / "engine.log").exists():
            found[self.root / "engine.log"] = "engine"  # a cwl or snakemake workflow's engine
        if self.component in (None, "worker"):
            for name in self.workers():
                if self.worker in (None, name):
                    found[self.root / "workers" / f"{name}.log"] = name
        return found

    def new_lines(self) -> Iterator[tuple[str, Line]]:
        """Everything not shown yet, merged across streams by time."""
        iterators = [
            self._keyed(order, path, label)
            for order, (path, label) in enumerate(self.streams().items())
        ]
        for _, label, path, line in heapq.merge(*iterators, key=lambda item: item[0]):
            self.position[path] = line.seq
            yield label, line

    def _keyed(self, order: int, path: Path, label: str) -> Iterator:
        for line in read_lines(path, since=self.position.get(path, self.since)):
            yield (line.timestamp_ns, order, line.seq), label, path, line

    def several(self) -> bool:
        return len(self.streams()) > 1 or (self.component in (None, "worker") and not self.worker)

    def format(self, label: str, line: Line, several: bool) -> str:
        text = line.text()
        if several:
            head = f"[{label} {line.seq}] " if self.numbers else f"[{label}] "
            return head + text + ("\n" if line.partial else "")
        if self.numbers:
            return f"{line.seq}\t{text}" + ("\n" if line.partial else "")
        return text


def show(view: View, follow: bool, out: TextIO = sys.stdout) -> int:
    view.check_worker()
    several = view.several()
    while True:
        ended = run_ended(view.run)  # read before the lines: the last lines precede the end
        for label, line in view.new_lines():
            out.write(view.format(label, line, several))
        out.flush()
        if not follow or ended:
            return 0
        time.sleep(FOLLOW_INTERVAL)
