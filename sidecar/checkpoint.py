"""The sidecar's checkpoint file: written atomically and durably, and only after the store."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class Checkpoints:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._last = ""

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # cannot happen with atomic saves; starting over beats crashing

    def save(self, states: dict[str, Any]) -> bool:
        """Write if anything changed; True when written."""
        text = json.dumps(states, sort_keys=True)
        if text == self._last:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself must survive a crash
        finally:
            os.close(folder)
        self._last = text
        return True


class Syncer:
    """The store's fsyncs and the checkpoint after them, in a thread of their own: shipping
    goes on while the disk (or a network file system) catches up. A checkpoint is handed over
    only after the bytes it counts were written, and saved only after the fsyncs of everything
    written so far, so it never counts what is not durable. A newer hand-over replaces one that
    is still waiting: only the latest checkpoint matters."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints
        self._cond = threading.Condition()
        self._fds: set[int] = set()
        self._states: dict[str, Any] | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-sync", daemon=True)
        self._thread.start()

    def hand(self, fds: list[int], states: dict[str, Any]) -> None:
        with self._cond:
            self._raise()
            self._fds.update(fds)
            self._states = states
            self._cond.notify_all()

    def flush(self) -> None:
        """Until what was handed over is saved: before a synchronous sync and save."""
        with self._cond:
            while (self._states is not None or self._busy) and self._error is None:
                self._cond.wait()
            self._raise()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._states is None and not self._closed:
                    self._cond.wait()
                if self._states is None:
                    return
                fds, states = self._fds, self._states
                self._fds, self._states, self._busy = set(), None, True
            try:
                for fd in fds:
                    os.fsync(fd)
                self.checkpoints.save(states)
            except BaseException as e:  # an I/O error: the shipping loop raises it
                with self._cond:
                    self._error = e
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
