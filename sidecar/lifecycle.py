"""What every sidecar started by `daskstep run` shares: it stops when the run dies, however it
dies, and the credential files it was told about go with it."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import time
from pathlib import Path
from typing import Any


def follow_run() -> None:
    """Started by `daskstep run` (it sets DASKSTEP_PARENT_PID): SIGTERM when it dies."""
    parent = os.environ.get("DASKSTEP_PARENT_PID")
    if parent:
        from entrypoint.lifetime import die_with_parent

        die_with_parent(signal.SIGTERM, expected_parent=int(parent))


def add_remove_on_exit(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--remove-on-exit",
        metavar="PATH",
        action="append",
        default=[],
        help=f"delete this file however we exit (repeatable); daskstep run names the {what}",
    )


def remove_files(paths: list[str]) -> None:
    """A credential must not outlive the run that asked for it, even one whose runner was killed."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


class StopSignal:
    """Set by SIGTERM or SIGINT (once installed), by `set()`, or by a stop file appearing; sleeps
    wake up on it.

    A Python signal handler runs between any two bytecodes of the main thread: inside `wait()`,
    and inside another run of itself when a second signal comes. `threading.Event.set()` takes
    a lock there, which the interrupted code may already hold, and then waits forever (seen: a
    log sidecar hung for good when `daskstep run` was killed, since the kernel's parent-death
    signal and `follow_run`'s own check each sent SIGTERM). So the handler only assigns a flag
    and writes a byte into a pipe, and `wait()` sleeps in select() on that pipe.
    """

    def __init__(self, stop_file: str | Path | None = None, file_poll: float = 0.2) -> None:
        self._stopped = False
        self.signum: int | None = None  # the first signal that stopped us
        self.signals = 0  # how many came: a second one may mean "now, do not wait"
        self.stop_file = Path(stop_file) if stop_file else None
        self.file_poll = file_poll
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._previous: dict[int, Any] = {}

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> StopSignal:
        for sig in signals:
            self._previous.setdefault(sig, signal.signal(sig, self.received))
        return self

    def uninstall(self) -> None:
        """Give the signals back to whoever had them, and close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def received(self, signum: int, frame: object = None) -> None:
        """The handler; tests call it to stand for a real signal."""
        self.signals += 1
        if self.signum is None:
            self.signum = signum
        self.set()

    def set(self) -> None:
        """Safe from a signal handler and from any thread: no lock is taken."""
        self._stopped = True
        with contextlib.suppress(OSError):  # a full pipe already wakes the sleeper
            os.write(self._wake_w, b"\0")

    def is_set(self) -> bool:
        if not self._stopped and self.stop_file is not None and self.stop_file.exists():
            self._stopped = True
        return self._stopped

    def wait(self, timeout: float) -> bool:
        """Sleep until stopped or `timeout` seconds pass; whether it is stopped."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stop_file is not None:
                left = min(left, self.file_poll)
            ready, _, _ = select.select([self._wake_r], [], [], left)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
        return True
