"""Writes the status file and the termination message; never lets a write failure hide the
step's own result."""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # not `typing`: importing it costs more than this module

if TYPE_CHECKING:
    from entrypoint.core import Status

TERMINATION_LIMIT = 1024


def iso(t: float) -> str:
    """UTC, millisecond resolution: the status files' time format."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def status_document(status: Status) -> dict:
    doc = {
        "reason": status.reason,
        "exit_code": status.exit_code,
        "started_at": iso(status.started_at),
        "finished_at": iso(status.finished_at),
        "duration_seconds": round(status.finished_at - status.started_at, 3),
        "scheduler": status.scheduler,
        "workers": status.workers,
        "peak_rss_bytes": status.peak_rss_bytes,
    }
    if status.command_started_at is not None:
        doc["command_started_at"] = iso(status.command_started_at)
    if status.message:
        doc["message"] = status.message
    return doc


def termination_message(status: Status) -> str:
    """At most 1 KiB, as Kubernetes keeps for terminationMessagePath."""
    import json

    doc = {"reason": status.reason, "exit_code": status.exit_code}
    if status.message:
        doc["message"] = status.message
    text = json.dumps(doc, separators=(",", ":"))
    while len(text.encode()) > TERMINATION_LIMIT:
        doc["message"] = doc["message"][: max(len(doc["message"]) - 64, 0)] + "…"
        text = json.dumps(doc, separators=(",", ":"))
    return text


def atomic_write(path: str, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.path.basename(path)}-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FileReporter:
    def __init__(self, status_file: str | None, termination_log: str | None) -> None:
        self.status_file = status_file
        self.termination_log = termination_log

    def write(self, status: Status) -> None:
        if self.status_file:
            import json

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
