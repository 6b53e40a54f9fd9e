"""Looks for secrets where they must never be: any process's argv, the environment of a run's
processes, and every file a run wrote."""

from __future__ import annotations

import base64
import contextlib
import threading
from pathlib import Path

import psutil


def keytab_needles(keytab: Path) -> dict[str, bytes]:
    raw = keytab.read_bytes()
    key = raw[-20:]  # the last entry's key (and its 32-bit kvno) end the file
    return {
        "keytab (raw tail)": raw[len(raw) // 2 :],
        "keytab key": key,
        "keytab (base64)": base64.b64encode(raw),
        "keytab key (base64)": base64.b64encode(key),
        "keytab (hex)": raw.hex().encode(),
        "keytab key (hex)": key.hex().encode(),
        "keytab key (HEX)": key.hex().upper().encode(),
    }


def pem_lines(path: Path) -> list[str]:
    """The base64 lines of a PEM key: any one of them showing up is a leak."""
    headers = ("-----", "Proc-Type:", "DEK-Info:")
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith(headers)]


def pem_needles(path: Path, label: str) -> dict[str, bytes]:
    return {f"{label} line {i}": ln.encode() for i, ln in enumerate(pem_lines(path))}


class LeakWatch:
    """Polls /proc while a run goes on: argv of every process, environ of the run's tree."""

    def __init__(self, root_pid: int, needles: dict[str, bytes], root_environ: bool = True) -> None:
        self.root_pid = root_pid
        self.root_environ = root_environ  # False: the test itself put a secret there
        self.needles = needles
        self.hits: list[str] = []
        self.scans = 0
        self.pids_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LeakWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _check(self, where: str, data: bytes) -> None:
        for label, needle in self.needles.items():
            if needle and needle in data:
                self.hits.append(f"{label} in {where}")

    def scan(self) -> None:
        tree = set()
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.root_pid)
            tree = {root.pid, *(p.pid for p in root.children(recursive=True))}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                self._check(f"{proc}/cmdline", (proc / "cmdline").read_bytes())
            if int(proc.name) in tree and (self.root_environ or int(proc.name) != self.root_pid):
                with contextlib.suppress(OSError):
                    self._check(f"{proc}/environ", (proc / "environ").read_bytes())
        self.pids_seen |= tree
        self.scans += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.2)

    def scan_output(self, text: str) -> None:
        """What the user saw on the terminal."""
        self._check("daskstep's output", text.encode(errors="replace"))

    def scan_files(self, folder: Path) -> int:
        """Every file under `folder` (logs, the store, status); returns how many were read."""
        count = 0
        for path in folder.rglob("*"):
            if path.is_file():
                self._check(str(path), path.read_bytes())
                count += 1
        return count
