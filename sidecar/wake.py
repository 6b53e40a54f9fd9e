"""Wake the shipping loop when a followed folder changes, instead of at its next poll.

Linux's inotify, through the C library (no dependency): a new worker's log, or a line after a
quiet spell, is shipped at once. Polling stays, and stays the truth: inotify misses what other
hosts write on a network file system, and the rotation rules read the folders anyway. Where
inotify is missing or refused (another OS, the watch limit reached), nothing wakes early.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
from pathlib import Path

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 -- both there, or none used
    except (OSError, AttributeError):
        return None
    return libc


def folder_of(pattern: str) -> Path | None:
    """The folder a file pattern's matches appear in; None when the folder part is a pattern."""
    folder = os.path.dirname(os.path.abspath(pattern))
    return None if glob.has_magic(folder) else Path(folder)


class FolderWatch:
    """A descriptor that becomes readable when a file in one of the folders changes."""

    def __init__(self, folders: list[Path]) -> None:
        self.pending = {Path(f) for f in folders}  # a folder made later is watched once it is
        self._libc = _libc() if self.pending else None
        self.fd = -1
        if self._libc is not None:
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)

    def descriptors(self) -> list[int]:
        """What to wait on besides the stop signal: nothing where inotify cannot be had."""
        if self.fd < 0:
            return []
        for folder in list(self.pending):
            if self._libc.inotify_add_watch(self.fd, os.fsencode(folder), MASK) >= 0:
                self.pending.discard(folder)
        return [self.fd]

    def drain(self) -> None:
        """Forget the changes seen so far: the round about to run reads whatever they were."""
        with contextlib.suppress(OSError):  # BlockingIOError: none left
            while self.fd >= 0 and os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
