"""Writes the status file and the termination message; never lets a write failure hide the
step's own result."""

import json
import os
import sys
import tempfile
import time
from typing import Optional

from entrypoint.core import Status

TERMINATION_LIMIT = 1024


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def status_document(status: Status) -> dict:
    doc = {
        "reason": status.reason,
        "exit_code": status.exit_code,
        "started_at": _iso(status.started_at),
        "finished_at": _iso(status.finished_at),
        "duration_seconds": round(status.finished_at - status.started_at, 3),
        "scheduler": status.scheduler,
        "workers": status.workers,
        "peak_rss_bytes": status.peak_rss_bytes,
    }
    if status.message:
        doc["message"] = status.message
    doc.update(status.extra)
    return doc


def termination_message(status: Status) -> str:
    """At most 1 KiB, as Kubernetes keeps for terminationMessagePath."""
    doc = {"reason": status.reason, "exit_code": status.exit_code}
    if status.message:
        doc["message"] = status.message
    text = json.dumps(doc, separators=(",", ":"))
    while len(text.encode()) > TERMINATION_LIMIT:
        doc["message"] = doc["message"][: max(len(doc["message"]) - 64, 0)] + "…"
        text = json.dumps(doc, separators=(",", ":"))
    return text


def atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FileReporter:
    def __init__(self, status_file: Optional[str], termination_log: Optional[str]) -> None:
        self.status_file = status_file
        self.termination_log = termination_log

    def write(self, status: Status) -> None:
        if self.status_file:
            try:
                atomic_write(self.status_file, json.dumps(status_document(status), indent=2) + "\n")
            except OSError as e:
                print(f"daskstep-entrypoint: cannot write {self.status_file}: {e}", file=sys.stderr)
        if self.termination_log:
            try:
                with open(self.termination_log, "w") as f:
                    f.write(termination_message(status))
            except OSError:
                pass
