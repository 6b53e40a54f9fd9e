"""One writer per log store. Two log sidecars on one workspace happen on Kubernetes: the next
step's pod starts while the previous one's sidecar still drains, and `daskstep run` may ship
into the same claim. Real sidecar processes, real files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import daskstep, wait_for

pytestmark = pytest.mark.integration


def test_a_second_sidecar_waits_for_the_first_then_takes_over(tmp_path: Path) -> None:
    raw = tmp_path / "raw.log"
    raw.write_text("".join(f"line {i}\n" for i in range(500)))
    store = tmp_path / ".daskstep" / "logs" / "job.log"
    source = f"job={raw}"
    first = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", source)
    wait_for(lambda: store.exists() and store.stat().st_size == raw.stat().st_size, 30, "first")
    second = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", source)
    try:
        assert second.stderr is not None
        assert second.stderr.readline() == "waiting: another log sidecar writes this store\n"
        with raw.open("a") as f:
            f.write("".join(f"more {i}\n" for i in range(100)))
        os.kill(first.pid, signal.SIGTERM)  # drains the new lines, then lets go
        assert first.wait(20) == 0
        with raw.open("a") as f:
            f.write("last\n")
        wait_for(lambda: store.read_text().endswith("last\n"), 30, "the second to ship")
    finally:
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
        first.wait(20)
    lines = store.read_text().splitlines()
    assert len(lines) == 601 and len(set(lines)) == 601  # every line once: no double writer


def test_a_waiting_sidecar_stops_on_sigterm(tmp_path: Path) -> None:
    raw = tmp_path / "raw.log"
    raw.write_text("x\n")
    store = tmp_path / ".daskstep" / "logs" / "job.log"
    first = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", f"job={raw}")
    second = None
    try:
        # the first holds the store once it has shipped: only then may the second start
        wait_for(lambda: store.exists() and store.read_text() == "x\n", 30, "the first")
        second = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", f"job={raw}")
        assert second.stderr is not None and "waiting" in second.stderr.readline()
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)
        if second is not None:
            second.kill()
            second.wait()
