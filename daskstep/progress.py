"""Progress on long waits: a live bar on a terminal, plain lines (one per change) otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class WaitProgress:
    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._rich = None
        self._task = None

    def __enter__(self) -> WaitProgress:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.what, total=self.total)
        return self

    def update(self, done: int, total: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done, total=total)
        else:
            elapsed = time.monotonic() - self.started
            print(f"daskstep: {self.what}: {done}/{total} ({elapsed:.1f} s)", file=self.stream)

    def __exit__(
        self, kind: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rich is not None:
            self._rich.stop()
