"""`daskstep pack-entrypoint`: the entrypoint as one file that runs in any image with Python 3.9+.

The archive is reproducible: sorted entries, fixed timestamps, no bytecode, so the same checkout
gives the same bytes (and the same digest in an image layer).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import stat
import zipfile
from pathlib import Path

import entrypoint

SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
VENDORED = ("tenacity",)  # pure Python, copied to the archive's top level
MAIN = "import sys\nfrom entrypoint.__main__ import main\nsys.exit(main())\n"


def _package_files(root: Path, prefix: str) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def _vendored(name: str) -> list[tuple[str, bytes]]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed; it is vendored into the entrypoint")
    files = _package_files(Path(next(iter(spec.submodule_search_locations))), name)
    dist = importlib.metadata.distribution(name)
    for f in dist.files or []:
        if "LICENSE" in f.name.upper():
            files.append((f"{name}/LICENSE", Path(str(f.locate())).read_bytes()))
            break
    files.append((f"{name}/VERSION", dist.version.encode() + b"\n"))
    return [(n, d) for n, d in files if not n.endswith("py.typed")]


def archive_entries() -> list[tuple[str, bytes]]:
    entries = _package_files(Path(entrypoint.__file__).parent, "entrypoint")
    for name in VENDORED:
        entries += _vendored(name)
    entries.append(("__main__.py", MAIN.encode()))
    return sorted(entries)


def pack(output: Path) -> Path:
    """Write the zipapp atomically; returns its path."""
    output = Path(output)
    if output.is_dir():
        output = output / "daskstep-entrypoint.pyz"
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(SHEBANG)
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in archive_entries():
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                z.writestr(info, data)
    tmp.chmod(0o755)
    tmp.replace(output)
    return output
