"""`daskstep wait-step`: the gate in front of a step Job applied together with the previous
step's (GitOps). Real files, a real process, the entrypoint's own status format."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from daskstep.wait_step import wait_step


def _write_later(path: Path, status: dict, after: float) -> None:
    def write() -> None:
        time.sleep(after)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(path)

    threading.Thread(target=write, daemon=True).start()


def test_the_gate_opens_once_the_previous_step_succeeded(tmp_path: Path) -> None:
    status = tmp_path / "steps" / "01-fit.json"
    _write_later(status, {"reason": "Completed", "exit_code": 0}, 0.3)
    t = time.monotonic()
    assert wait_step(status, timeout=10, poll=0.02) == 0
    assert time.monotonic() - t >= 0.3


def test_a_failed_previous_step_keeps_it_shut_with_that_code(tmp_path: Path) -> None:
    status = tmp_path / "01-fit.json"
    status.write_text("{half")  # as a reader may see a file that is not complete yet
    _write_later(status, {"reason": "Error", "exit_code": 3}, 0.1)
    daskstep = Path(sys.executable).parent / "daskstep"
    out = subprocess.run(
        [str(daskstep), "wait-step", str(status)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 3
    assert "the previous step failed with exit code 3 (Error): not running" in out.stderr


def test_it_gives_up_after_its_timeout(tmp_path: Path) -> None:
    assert wait_step(tmp_path / "never.json", timeout=0.1, poll=0.02) == 124


def test_its_timeout_is_shown_as_seconds_as_elsewhere() -> None:
    """`wait-step --timeout TIMEOUT`, where the other commands say SECONDS."""
    daskstep = Path(sys.executable).parent / "daskstep"
    out = subprocess.run(
        [str(daskstep), "wait-step", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "--timeout SECONDS" in out.stdout and "TIMEOUT" not in out.stdout
    assert "default: no limit" in out.stdout
