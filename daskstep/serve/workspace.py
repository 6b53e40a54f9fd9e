"""A workflow's workspace: where an upload may go, the specification bundle unpacked into it,
its size. A path is refused unless it stays inside the workspace: no absolute path, no `..`, no
symlink on the way, nothing in the run records (`.daskstep`) or the server's state.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import zipfile
from pathlib import Path

from daskstep.record import STATE
from daskstep.serve.api import refuse

MAX_BUNDLE_BYTES = 64 << 20
MAX_UPLOAD_BYTES = 1 << 30


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def writable_path(root: Path, relative: str) -> Path | None:
    """Where an upload of `relative` goes, or None when it would leave the workspace."""
    if not relative or "\0" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] in (STATE, ".daskstep-serve"):
        return None
    target = root / relative
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            return None
    if target.is_symlink() or target.is_dir():
        return None
    real = target.parent.resolve() if target.parent.exists() else None
    if real is not None and not real.is_relative_to(root.resolve()):
        return None
    return target


def unpack(data: bytes, workspace: Path) -> None:
    """The bundle's files into the workspace: regular files only, every path inside it."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise refuse(413, "bundle: larger than 64 MiB")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except zipfile.BadZipFile:
        raise refuse(400, "bundle: not a zip archive") from None
    if sum(m.file_size for m in members) > MAX_BUNDLE_BYTES:
        raise refuse(413, "bundle: its files add up to more than 64 MiB")
    names = {m.filename for m in members}
    if "reana.yaml" not in names:
        raise refuse(400, "bundle: it has no reana.yaml at its top")
    for member in members:
        mode = member.external_attr >> 16
        target = writable_path(workspace, member.filename)
        if member.is_dir() or target is None or (mode and (mode & 0o170000) not in (0, 0o100000)):
            raise refuse(400, f"bundle: {member.filename!r} is not a file inside the workspace")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)


def size_of(root: Path) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
