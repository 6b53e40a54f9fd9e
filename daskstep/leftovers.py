"""A run's private folder (its TLS keys and credentials, outside the workspace): marked with its
controller, so that `daskstep gc` can remove the folder of a run whose controller and reaper
both died (the OOM killer, a `kill -9` of the whole tree), and nothing of a live run's."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from daskstep.record import controller_gone, controller_mark

PREFIX = "daskstep-credentials-"
OWNER = "controller"  # host:pid of the run's `daskstep run`


def private_folder(base: str | None) -> Path:
    """A new private folder (0700), marked as this controller's before anything is in it."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    (folder / OWNER).write_text(controller_mark())
    return folder


def sweep() -> list[Path]:
    """Remove the private folders, of this user, whose controller is known dead."""
    removed = []
    for base in {tempfile.gettempdir(), os.environ.get("XDG_RUNTIME_DIR") or ""} - {""}:
        for folder in Path(base).glob(PREFIX + "*"):
            try:
                if folder.stat().st_uid != os.getuid():
                    continue
                mark = (folder / OWNER).read_text().strip()
            except OSError:  # gone meanwhile, or an older daskstep's: not known dead
                continue
            if controller_gone(mark):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def gc(kind: Any, everything: bool) -> int:
    """`daskstep gc`: the backend's leftovers, then the private folders of dead runs here."""
    kind.gc(everything)
    for folder in sweep():
        print(f"removed {folder}: the private folder of a run whose controller is gone")
    return 0
