"""`daskstep pack-entrypoint`: the entrypoint as one file that runs in any image with Python 3.9+.

The archive is reproducible: sorted entries and fixed timestamps, so the same checkout gives the
same bytes (and the same digest in an image layer). It carries unchecked-hash bytecode for the
packing Python beside the sources: zipimport uses it when the versions match and compiles the
source otherwise, so a step in the same Python starts without compiling anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import marshal
import shutil
import stat
import zipfile
from pathlib import Path

import entrypoint

SHEBANG = b"#!/usr/bin/env python3\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
VENDORED = ("tenacity",)  # pure Python, copied to the archive's top level
OLDEST_PYTHON = (3, 9)  # the oldest Python the zipapp supports
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
    _check_supports_oldest(name, dist)
    for f in dist.files or []:
        if "LICENSE" in f.name.upper():
            files.append((f"{name}/LICENSE", Path(str(f.locate())).read_bytes()))
            break
    files.append((f"{name}/VERSION", dist.version.encode() + b"\n"))
    return [(n, d) for n, d in files if not n.endswith("py.typed")]


def _bytecode(name: str, source: bytes) -> bytes:
    """A PEP 552 unchecked-hash .pyc: valid whatever the archive's timestamps say."""
    code = compile(source, name, "exec", dont_inherit=True)
    flags = (0b01).to_bytes(4, "little")  # hash-based, do not check the source
    digest = importlib.util.source_hash(source)
    return importlib.util.MAGIC_NUMBER + flags + digest + marshal.dumps(code)


def _check_supports_oldest(name: str, dist: importlib.metadata.Distribution) -> None:
    """A vendored package must run where the zipapp runs, or the wrapper breaks only there."""
    requires = dist.metadata.get("Requires-Python") or ""
    for clause in requires.split(","):
        clause = clause.strip()
        if clause.startswith(">="):
            wanted = tuple(int(p) for p in clause[2:].split(".")[:2] if p.isdigit())
            if wanted > OLDEST_PYTHON:
                oldest = ".".join(map(str, OLDEST_PYTHON))
                raise RuntimeError(
                    f"{name} {dist.version} needs Python {clause}, but the entrypoint supports "
                    f"Python {oldest}; install the version pinned in pyproject.toml"
                )


def archive_entries() -> list[tuple[str, bytes]]:
    entries = _package_files(Path(entrypoint.__file__).parent, "entrypoint")
    for name in VENDORED:
        entries += _vendored(name)
    entries.append(("__main__.py", MAIN.encode()))
    entries += [(n + "c", _bytecode(n, d)) for n, d in entries if n.endswith(".py")]
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


INSTALLED = Path("/daskstep/entrypoint.pyz")  # where the daskstep image holds it


def install(folder: Path) -> Path:
    """Put the zipapp into `folder` (a volume the step container mounts), as Tekton's init
    container copies its entrypoint binary: the daskstep image's own copy, else a fresh one."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "entrypoint.pyz"
    if INSTALLED.is_file():
        shutil.copyfile(INSTALLED, target)
        return target
    return pack(target)
