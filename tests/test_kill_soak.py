"""SIGKILL `daskstep run` at uniform random moments between 0.1 and 5 s, which lands in every
phase (input checks, sidecar and cluster start, the wait for workers, the step, the teardown):
nothing of the run may be left running 10 s later.

CI kills 20 times; `DASKSTEP_KILL_SOAK=100` kills 100 times. The seed is printed, and
`DASKSTEP_KILL_SOAK_SEED` replays it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path

import psutil
import pytest
from conftest import daskstep, write_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = int(os.environ.get("DASKSTEP_KILL_SOAK", "20"))
SEED = int(os.environ.get("DASKSTEP_KILL_SOAK_SEED", str(random.randrange(2**32))))
SETTLE = 10.0


def _of_run(workspace: Path) -> list[psutil.Process]:
    """Processes that belong to the run in `workspace`: they work in it or name it."""
    mark = str(workspace)
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            cwd = p.info["cwd"] or ""
            if cwd.startswith(mark) or mark in " ".join(p.info["cmdline"] or []):
                found.append(p)
    return found


def test_sigkill_at_random_moments_leaves_nothing_running(tmp_path: Path) -> None:
    print(f"seed {SEED}: {KILLS} kills")
    rng = random.Random(SEED)
    left: list[str] = []
    for i in range(KILLS):
        workspace = tmp_path / f"run-{i}"
        spec = write_workflow(workspace, [("work", ["sleep 3", "echo done"])], workers=2)
        delay = rng.uniform(0.1, 5.0)
        run = daskstep("run", str(spec))
        time.sleep(delay)
        run.send_signal(signal.SIGKILL)
        run.communicate()
        deadline = time.monotonic() + SETTLE
        while (procs := _of_run(workspace)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                left.append(f"kill {i} at {delay:.2f} s: pid {p.pid} {' '.join(p.cmdline())}")
                p.kill()
    assert not left, f"seed {SEED}: left running {SETTLE:g} s after SIGKILL:\n" + "\n".join(left)
