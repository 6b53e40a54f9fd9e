"""`daskstep wait-step STATUS_FILE`: the gate in front of a step whose Job was applied together
with the previous step's (GitOps): it waits for the previous step's status file and lets the
pod go on only if that step succeeded. Otherwise it exits with that step's code, so the
workflow's first failing code is what the Job reports, and the later steps never start."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

POLL_SECONDS = 1.0
TERMINATION_LOG = "/dev/termination-log"


def _say(message: str) -> None:
    print(f"daskstep: {message}", file=sys.stderr, flush=True)
    if os.access(TERMINATION_LOG, os.W_OK):
        Path(TERMINATION_LOG).write_text(message[:1024])


def wait_step(status_file: Path, timeout: float | None = None, poll: float = POLL_SECONDS) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    _say(f"waiting for the previous step: {status_file}")
    while True:
        try:
            status = json.loads(status_file.read_text())
            code = int(status["exit_code"])
            break
        except (OSError, ValueError, KeyError, TypeError):  # not there yet, or half written
            pass
        if deadline is not None and time.monotonic() >= deadline:
            _say(f"the previous step did not finish within {timeout:g} s ({status_file})")
            return 124
        time.sleep(poll)
    if code == 0:
        _say("the previous step succeeded")
        return 0
    _say(f"the previous step failed with exit code {code} ({status.get('reason')}): not running")
    return code
