"""What every sidecar started by `daskstep run` shares: it stops when the run dies, however it
dies, and the credential files it was told about go with it."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


def exit_after_stop(code: int) -> NoReturn:
    """A sidecar's end: once it has stopped, a SIGTERM or SIGINT changes nothing. The
    interpreter's exit puts their default actions back, and a second SIGTERM sent with the
    first (a killed `daskstep run`'s death signal and the sidecar's own check each send one)
    that came in that window turned a drained sidecar's exit 0 into a kill (-15)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


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


# The handler Python calls for our signals: a C function, so no Python frame runs and nothing
# can re-enter it. The C-level handler has already written the signal's number to the wakeup
# pipe, which is all we need.
_NOTED_IN_THE_PIPE = {}.get


class StopSignal:
    """Set by SIGTERM or SIGINT (once installed), by `set()`, or by a stop file appearing; sleeps
    wake up on it.

    A Python signal handler runs between any two bytecodes of the main thread: inside `wait()`,
    and inside another run of itself when the next signal comes. Two designs failed here:
    `threading.Event.set()` in the handler takes a lock the interrupted code may hold, and hung
    a log sidecar for good when `daskstep run` was killed (the kernel's parent-death signal and
    `follow_run`'s own check each send SIGTERM); a handler that only set a flag and wrote a
    byte still recursed past Python's limit under a storm of SIGTERMs, each one landing in the
    handler before the previous had returned. So no Python code runs per signal: CPython's
    C handler writes the signal number into our pipe (`signal.set_wakeup_fd`), the handler
    Python then calls is a C function that does nothing, and readers count the bytes.
    """

    def __init__(self, stop_file: str | Path | None = None, file_poll: float = 0.2) -> None:
        self._stopped = False
        self._signum: int | None = None
        self._signals = 0
        self._counted: set[int] = set()
        self._lock = threading.Lock()  # readers only; never taken in a signal handler
        self.stop_file = Path(stop_file) if stop_file else None
        self.file_poll = file_poll
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._previous: dict[int, Any] = {}
        self._previous_wakeup: int | None = None

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> StopSignal:
        """Main thread only (Python's rule for signal handlers)."""
        if self._previous_wakeup is None:
            self._previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in signals:
            self._counted.add(sig)
            self._previous.setdefault(sig, signal.signal(sig, _NOTED_IN_THE_PIPE))
        return self

    def uninstall(self) -> None:
        """Give the signals back to whoever had them, and close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._previous_wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            self._previous_wakeup = None
        self._drain()  # a signal that came before the handlers went back still counts
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    @property
    def signum(self) -> int | None:
        """The first signal that stopped us."""
        self._drain()
        return self._signum

    @property
    def signals(self) -> int:
        """How many came: a second one may mean "now, do not wait"."""
        self._drain()
        return self._signals

    def received(self, signum: int) -> None:
        """Stands for a real signal in tests: the same byte in the same pipe."""
        self._counted.add(signum)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, bytes([signum]))

    def set(self) -> None:
        """Safe from any thread."""
        self._stopped = True
        with contextlib.suppress(OSError):  # a full pipe already wakes the sleeper
            os.write(self._wake_w, b"\0")

    def _drain(self) -> None:
        with self._lock:
            while self._wake_r >= 0:
                try:
                    data = os.read(self._wake_r, 4096)
                except OSError:  # empty (BlockingIOError) or closed
                    return
                if not data:
                    return
                for signum in data:
                    if signum in self._counted:
                        self._signals += 1
                        self._signum = self._signum or signum
                        self._stopped = True

    def is_set(self) -> bool:
        self._drain()
        if not self._stopped and self.stop_file is not None and self.stop_file.exists():
            self._stopped = True
        return self._stopped

    def wait(self, timeout: float, also: Sequence[int] = ()) -> bool:
        """Sleep until stopped, `timeout` seconds pass, or one of the descriptors `also` can be
        read; whether it is stopped."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stop_file is not None:
                left = min(left, self.file_poll)
            if self._wake_r < 0 and not also:
                time.sleep(left)
                continue
            readable = select.select([fd for fd in (self._wake_r, *also) if fd >= 0], [], [], left)
            if set(readable[0]) & set(also):
                return self.is_set()
        return True
