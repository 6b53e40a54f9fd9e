"""The sidecar's checkpoint file: written atomically and durably, and only after the store."""

from __future__ import annotations

import json
import os
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
