"""daskstep run's own stdout and stderr, which must not change how a run ends.

`daskstep run … 2>&1 | tee run.log`, then Ctrl-C: the terminal's SIGINT ends tee as well, and
the next line daskstep wrote raised BrokenPipeError in the middle of teardown, which then left
no report and a status.json saying `running`. What is said goes to the run's files anyway (the
job log, status.json); a stream that is gone is left alone from then on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class Forgiving:
    """A text stream whose writes never raise: once its reader is gone, they go nowhere."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):  # a closed pipe, a closed file
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.gone = True

    def isatty(self) -> bool:
        try:
            return not self.gone and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:  # fileno, buffer, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def forgiving_streams() -> Iterator[None]:
    """Meanwhile, this process's prints to stdout and stderr never fail. A stream found gone
    is pointed at /dev/null afterwards: the interpreter's last flush must not complain."""
    saved = sys.stdout, sys.stderr
    out, err = Forgiving(saved[0]), Forgiving(saved[1])
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        for stream in (out, err):
            if stream.gone:
                quiet(stream)


def quiet(stream: Any) -> None:
    """Whatever is still written to `stream`'s file descriptor goes nowhere."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
