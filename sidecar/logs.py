"""`daskstep sidecar logs`: ship job, scheduler and worker logs into the store, live, exactly once.

The loop: each source moves what it has into the store; the store is synced; only then are the
sources' positions checkpointed. On SIGTERM it drains what is left, flushes lines still waiting
for their newline, and exits 0.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from sidecar.base import Source
from sidecar.checkpoint import Checkpoints
from sidecar.files import FileSource
from sidecar.lifecycle import follow_run
from sidecar.store import COMPONENTS, LogStore

POLL_INTERVAL = 0.1
DRAIN_ROUNDS = 1000  # bounded: a writer that never stops cannot keep us from exiting


def parse_source(spec: str) -> FileSource:
    component, sep, pattern = spec.partition("=")
    pattern = str(Path(pattern).absolute())  # the checkpoint key must not depend on the cwd
    if not sep or component not in COMPONENTS or not pattern:
        raise ValueError(
            f"--source {spec!r}: write COMPONENT=GLOB with COMPONENT one of "
            f"{', '.join(COMPONENTS)}, e.g. worker=/logs/workers/*.log"
        )
    return FileSource(component, pattern)


class Shipper:
    def __init__(self, store: LogStore, sources: list[Source], checkpoints: Checkpoints) -> None:
        self.store = store
        self.sources = sources
        self.checkpoints = checkpoints
        self.stop = threading.Event()

    def start(self) -> None:
        saved = self.checkpoints.load()
        for source in self.sources:
            source.restore(saved.get(source.key), self.store)

    def step(self, final: bool = False) -> int:
        """One round; what it did: lines stored, or 1 for a position change without lines
        (a switch to the next file), so that callers go on until nothing moves."""
        lines = sum(source.poll(self.store, final) for source in self.sources)
        self.store.sync()  # durable first ...
        moved = self.checkpoints.save({s.key: s.state() for s in self.sources})  # ... then this
        return lines or int(moved)

    def run(self, poll_interval: float = POLL_INTERVAL) -> int:
        self.start()
        try:
            while not self.stop.is_set():
                if self.step() == 0:
                    self.stop.wait(poll_interval)
            for _ in range(DRAIN_ROUNDS):  # to the end of every queued file, then stop
                if self.step(final=True) == 0:
                    break
        finally:
            for source in self.sources:
                source.close()
            self.store.close()
        return 0


def main(workspace: Path, specs: list[str], checkpoint_file: Path | None = None) -> int:
    store = LogStore(Path(workspace) / ".daskstep" / "logs")
    checkpoints = Checkpoints(
        checkpoint_file or Path(workspace) / ".daskstep" / "log-checkpoints.json"
    )
    shipper = Shipper(store, [parse_source(s) for s in specs], checkpoints)

    def on_signal(signum: int, frame: Any) -> None:
        shipper.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    follow_run()  # started by `daskstep run`: drain and go if it dies
    return shipper.run()
