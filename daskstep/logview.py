"""`daskstep logs`: print the store, during a run or after it, and follow it live.

Lines are read by sequence number from each stream's index, never compared by content, so a line
identical to an earlier one is still shown (REANA's follow drops those).
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from daskstep.errors import InputError, Problem
from sidecar.store import Line, read_lines

FOLLOW_INTERVAL = 0.2


class View:
    def __init__(
        self,
        workspace: Path,
        component: str | None = None,
        worker: str | None = None,
        since: int = 0,
    ) -> None:
        self.state = Path(workspace) / ".daskstep"
        self.root = self.state / "logs"
        if not self.root.is_dir():
            raise InputError(
                [Problem("--workspace", f"no logs in {self.root}; give the run's workspace")]
            )
        if worker and component not in (None, "worker"):
            raise InputError([Problem("--worker", "only goes with --component worker")])
        self.component = "worker" if worker else component
        self.worker = worker
        self.position: dict[Path, int] = {}
        self.since = since

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
            for path in sorted((self.root / "workers").glob("*.log")):
                if self.worker in (None, path.stem):
                    found[path] = path.stem
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

    def run_ended(self) -> bool:
        try:
            status = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return status.get("status") not in (None, "pending", "running")


def show(view: View, follow: bool, out: TextIO = sys.stdout) -> int:
    several = len(view.streams()) > 1 or (view.component in (None, "worker") and not view.worker)
    while True:
        ended = view.run_ended()  # read before the lines: the last lines precede the end
        for label, line in view.new_lines():
            text = line.text()
            if several:
                text = f"[{label}] {text}" + ("\n" if line.partial else "")
            out.write(text)
        out.flush()
        if not follow or ended:
            return 0
        time.sleep(FOLLOW_INTERVAL)
