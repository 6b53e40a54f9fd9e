"""`daskstep logs`, during a live run and after it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import daskstep, wait_for, write_workflow

pytestmark = pytest.mark.integration

TICKS = "for i in 1 2 3 4 5 6; do echo same; echo tick $i; sleep 0.4; done"


def test_follow_shows_lines_live_keeps_repeats_and_ends_with_the_run(tmp_path: Path) -> None:
    spec = write_workflow(tmp_path, [("ticks", [TICKS])], workers=1)
    run = daskstep("run", str(spec))
    try:
        wait_for(lambda: (tmp_path / ".daskstep" / "logs" / "job.log").exists(), 60, "the store")
        follow = subprocess.Popen(
            [sys.executable, "-m", "daskstep", "logs", "--workspace", str(tmp_path)]
            + ["--component", "job", "--follow"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert follow.stdout is not None
        first = follow.stdout.readline()
        while first.startswith("daskstep: "):  # daskstep's own line marking the step's start
            first = follow.stdout.readline()
        assert run.poll() is None, "the first line should arrive while the run is still going"
        assert first in ("same\n", "tick 1\n")
        # through the same file object: communicate() would skip what readline() buffered
        rest = follow.stdout.read()  # EOF: it ends by itself when the run ends
        assert follow.wait(timeout=60) == 0
    finally:
        run.communicate(timeout=120)
    assert run.returncode == 0
    shown = [line for line in (first + rest).splitlines() if not line.startswith("daskstep: ")]
    expected = [line for i in range(1, 7) for line in ("same", f"tick {i}")]
    assert shown == expected  # every repeat of "same" is there: nothing deduplicated


def test_logs_after_the_run_prefix_each_component(tmp_path: Path) -> None:
    spec = write_workflow(tmp_path, [("hello", ["echo hello from the job"])], workers=2)
    run = daskstep("run", str(spec))
    run.communicate(timeout=120)
    assert run.returncode == 0

    def logs(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "daskstep", "logs", "--workspace", str(tmp_path), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    everything = logs()
    assert "[job] hello from the job\n" in everything
    assert "[scheduler] " in everything and "Scheduler at" in everything
    assert "[worker-0] " in everything and "[worker-1] " in everything
    job = logs("--component", "job")
    # one stream: exactly the program's lines, no prefix, between daskstep's step marks
    assert job == (
        "daskstep: step hello (1/1) started\nhello from the job\ndaskstep: step hello finished\n"
    )
    one_worker = logs("--worker", "worker-1")
    assert "Start worker at" in one_worker and "[" not in one_worker.splitlines()[0][:1]
    assert (
        logs("--component", "job", "--since", "1")
        == "hello from the job\ndaskstep: step hello finished\n"
    )
    assert logs("--component", "job", "--since", "3") == ""


def test_a_workspace_without_logs_is_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "logs", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: --workspace: no run in")
    assert "Traceback" not in done.stderr


def test_the_command_line_imports_no_event_loop_or_dask_before_a_command_needs_it() -> None:
    """`daskstep logs`, `status` and `list` are typed many times a day: importing the command
    line must not pull in asyncio (30 ms), distributed or the servers' modules (ui, serve)."""
    code = (
        "import sys, daskstep.cli; "
        "print(' '.join(m for m in ('asyncio', 'distributed', 'dask', 'tornado', 'authlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
