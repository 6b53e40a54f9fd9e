"""The tools' output of a cwl or snakemake run, on its way to the job log and the terminal.

A serial step's output comes to `daskstep run` through a pipe, which copies it into the job log
and onto the terminal. An engine's tools are started by the engine, not by us, and their
output must not become the engine's (which is the engine log): each tool's wrapper
(engines/tool.py) writes into a named pipe in the run's raw folder instead, with its own
`step NAME started` and `ended` marks, so the lines arrive here in the order the tools wrote
them, and go on, as a serial step's, into the job log and onto the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path


class ToolOutput:
    """The named pipe's reader, while the engine runs (a context manager)."""

    def __init__(self, pipe: Path, job_log: Path) -> None:
        self.pipe = pipe
        self.job_log = job_log
        self._read: int | None = None
        self._hold: int | None = None  # our own writer: no end of file between two tools
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ToolOutput:
        self.pipe.unlink(missing_ok=True)
        os.mkfifo(self.pipe, 0o600)
        self._read = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK)
        self._hold = os.open(self.pipe, os.O_WRONLY)
        os.set_blocking(self._read, True)
        self._thread = threading.Thread(target=self._copy, daemon=True, name="tool-output")
        self._thread.start()
        return self

    def _copy(self) -> None:
        assert self._read is not None
        terminal = sys.stdout.buffer
        with open(self.job_log, "ab") as log:
            while True:
                try:
                    chunk = os.read(self._read, 65536)
                except OSError:
                    return
                if not chunk:  # every writer closed, ours too: the engine has ended
                    return
                log.write(chunk)
                log.flush()
                with contextlib.suppress(OSError, ValueError):  # a closed terminal
                    terminal.write(chunk)
                    terminal.flush()

    def __exit__(self, *exc: object) -> None:
        """What the tools wrote is copied before this returns (a tool left behind that still
        holds the pipe is not waited for long)."""
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._read is not None:
            with contextlib.suppress(OSError):
                os.close(self._read)
            self._read = None
        self.pipe.unlink(missing_ok=True)


def open_for_tools(path: str) -> int:
    """The tools' end of the job log: the named pipe while `daskstep run` reads it, else the
    log file beside it (a pipe nobody reads would block the tool for good)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader; ENOENT: no pipe
        return os.open(_file_beside(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.set_blocking(fd, True)
    return fd


def _file_beside(path: str) -> str:
    return path[: -len(".pipe")] + ".log" if path.endswith(".pipe") else path
