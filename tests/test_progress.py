"""The progress display: a step's tasks as the scheduler counts them, drawn live by rich on a
terminal and as plain lines otherwise. Units with a fake clock and a fake console; the run loop
with fakes; then a real `daskstep run` in a pseudo-terminal, in tmux, and with stderr a pipe."""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import io
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import daskstep, require, script, write_workflow
from rich.console import Console

from daskstep import progress
from daskstep import run as run_module
from daskstep.progress import StepProgress, WaitProgress, say
from daskstep.record import Workspace

ESCAPE = "\x1b["


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scheduler:
    """Counts to answer, one a call (the last one again when they run out), or an error."""

    def __init__(self, *answers: dict[str, int] | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    def __call__(self) -> dict[str, int]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def counts(processing: int = 0, memory: int = 0, erred: int = 0, waiting: int = 0):
    return {"processing": processing, "memory": memory, "erred": erred, "waiting": waiting}


def plain(scheduler, clock: Clock, stream: io.StringIO, **options) -> StepProgress:
    return StepProgress(
        "fit", 1, 3, scheduler, stream=stream, clock=clock, background=False, **options
    )


def tick(tasks: StepProgress, clock: Clock, seconds: float = 1.0) -> None:
    clock.now += seconds
    tasks.poll()


# -- plain lines ---------------------------------------------------------------------------------
def test_plain_lines_come_at_most_every_five_seconds_then_a_summary() -> None:
    clock, stream = Clock(), io.StringIO()
    scheduler = Scheduler(
        counts(),  # the step starts: the scheduler holds nothing
        counts(processing=4, memory=10),  # t=1: the first change is said at once
        counts(processing=4, memory=20),  # t=2..5: changes, but too soon
        counts(processing=4, memory=30),
        counts(processing=4, memory=40),
        counts(processing=4, memory=50),
        counts(processing=4, memory=60, erred=2),  # t=6: five seconds on, said
        counts(processing=1, memory=60, erred=2),  # t=7: too soon
        counts(processing=1, memory=60, erred=2),  # t=8..11: unchanged since t=7
    )
    with plain(scheduler, clock, stream) as tasks:
        for _ in range(11):
            tick(tasks, clock)
    assert stream.getvalue().splitlines() == [
        "daskstep: step fit: 4 processing, 10 in memory, 0 erred (1.0 s)",
        "daskstep: step fit: 4 processing, 60 in memory, 2 erred (6.0 s)",
        "daskstep: step fit: 1 processing, 60 in memory, 2 erred (11.0 s)",
        "daskstep: step fit: peak 4 processing, peak 60 in memory, 2 erred (11.0 s)",
    ]
    assert scheduler.asked == 13  # and one more as the step ends, for the summary


def test_plain_output_has_no_control_characters() -> None:
    clock, stream = Clock(), io.StringIO()
    scheduler = Scheduler(counts(), counts(processing=8, waiting=300, memory=5, erred=1))
    with plain(scheduler, clock, stream, plain_seconds=0.0) as tasks:
        for _ in range(3):
            tick(tasks, clock)
    text = stream.getvalue()
    assert "300 waiting" in text and "1 erred" in text
    assert all(c == "\n" or c.isprintable() for c in text), repr(text)
    assert ESCAPE not in text


def test_the_interval_is_the_callers() -> None:
    clock, stream = Clock(), io.StringIO()
    answers = [counts()] + [counts(processing=1, memory=m) for m in range(1, 6)]
    with plain(Scheduler(*answers), clock, stream, plain_seconds=0.0) as tasks:
        for _ in range(5):
            tick(tasks, clock)
    assert len(stream.getvalue().splitlines()) == 6  # every change, then the summary


def test_a_step_that_computes_nothing_prints_nothing() -> None:
    clock, stream = Clock(), io.StringIO()
    with plain(Scheduler(counts(memory=7)), clock, stream) as tasks:  # data of an earlier step
        for _ in range(8):
            tick(tasks, clock)
    assert stream.getvalue() == ""


def test_queued_tasks_count_as_waiting() -> None:
    clock, stream = Clock(), io.StringIO()
    scheduler = Scheduler(counts(), {"processing": 4, "queued": 900, "waiting": 100})
    with plain(scheduler, clock, stream) as tasks:
        tick(tasks, clock)
    assert "4 processing, 1000 waiting, 0 in memory" in stream.getvalue()


def test_a_scheduler_that_cannot_be_asked_gives_no_line_and_no_error() -> None:
    clock, stream = Clock(), io.StringIO()
    scheduler = Scheduler(OSError("Timed out trying to connect"))
    with plain(scheduler, clock, stream) as tasks:
        for _ in range(5):
            tick(tasks, clock)
    assert stream.getvalue() == ""
    assert scheduler.asked == 1  # never answered: not asked again


def test_a_count_that_fails_mid_step_is_skipped_and_three_in_a_row_end_the_asking() -> None:
    clock, stream = Clock(), io.StringIO()
    boom = RuntimeError("the scheduler is busy")
    scheduler = Scheduler(
        counts(), counts(processing=2), boom, counts(processing=3), boom, boom, boom, counts()
    )
    with plain(scheduler, clock, stream, plain_seconds=0.0) as tasks:
        for _ in range(10):
            tick(tasks, clock)
    assert scheduler.asked == 7
    lines = stream.getvalue().splitlines()
    assert lines[:2] == [
        "daskstep: step fit: 2 processing, 0 in memory, 0 erred (1.0 s)",
        "daskstep: step fit: 3 processing, 0 in memory, 0 erred (3.0 s)",
    ]
    assert lines[2].startswith("daskstep: step fit: peak 3 processing")


def test_no_counts_no_display() -> None:
    stream = io.StringIO()
    with StepProgress("fit", 0, 1, None, stream=stream) as tasks:
        tasks.poll()
    assert stream.getvalue() == ""


def test_say_without_a_live_display_is_a_plain_stderr_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    say("step fit finished")
    assert capsys.readouterr().err == "daskstep: step fit finished\n"


# -- rich, on a (fake) terminal ------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_say_while_workers_register_goes_above_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    stream = Terminal()
    with WaitProgress("waiting for workers", 2, stream) as wait:
        wait.update(1, 2)
        say("warning: worker worker-1: lost: it exited with -9")
    assert "warning: worker worker-1: lost: it exited with -9\n" in stream.getvalue()
    say("cluster ready")
    assert capsys.readouterr().err == "daskstep: cluster ready\n"


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=120, color_system=None), screen


def test_rich_draws_the_counts_and_leaves_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    console, screen = terminal()
    scheduler = Scheduler(counts(), counts(processing=120, memory=3400))
    with StepProgress(
        "fit", 1, 3, scheduler, console=console, clock=clock, background=False
    ) as tasks:
        clock.now += 12.3
        tasks.poll()
        tasks._live.refresh()
        drawn = screen.getvalue()
        say("warning: worker worker-1: lost: it exited with -9")
    assert "step fit (2/3)" in drawn
    assert "120 processing · 3400 in memory · 0 erred · 12.3 s" in drawn
    assert ESCAPE in drawn  # a live line: redrawn in place
    after = screen.getvalue()[len(drawn) :]
    # say() went through the console, above the line, not past it to stderr
    assert "warning: worker worker-1: lost: it exited with -9" in after
    assert capsys.readouterr().err == ""
    # the last thing drawn, left on the screen
    final = after.rsplit("\x1b[2K", 1)[-1]
    assert "step fit (2/3)  ✓ peak 120 processing · peak 3400 in memory · 0 erred" in final
    assert progress._console is None  # say() is plain again


def test_rich_marks_erred_tasks() -> None:
    clock = Clock()
    console, screen = terminal()
    scheduler = Scheduler(counts(), counts(processing=1, memory=3, erred=5))
    with StepProgress(
        "fit", 0, 1, scheduler, console=console, clock=clock, background=False
    ) as tasks:
        tick(tasks, clock)
    assert "✗ peak 1 processing · peak 3 in memory · 5 erred · 1.0 s" in screen.getvalue()


@pytest.mark.parametrize(
    ("code", "cancelled", "mark"),
    [
        (1, False, "✗ failed (exit code 1) · peak 1 processing"),  # nothing erred, it failed
        (130, True, "✗ cancelled · peak 1 processing"),
        (0, False, "✓ peak 1 processing"),
    ],
)
def test_the_summary_mark_follows_the_step_s_exit_code(code, cancelled, mark) -> None:
    """The mark followed the erred count sampled once a second: a step that failed with no
    task erred, or one cancelled by Ctrl-C, ended with a green ✓."""
    clock = Clock()
    console, screen = terminal()
    scheduler = Scheduler(counts(), counts(processing=1, memory=3))
    with StepProgress(
        "fit", 0, 1, scheduler, console=console, clock=clock, background=False
    ) as tasks:
        tick(tasks, clock)
        tasks.ended(code, cancelled)
    final = screen.getvalue().rsplit("\x1b[2K", 1)[-1]
    assert mark in final
    assert ("✓" in final) == (code == 0)


def test_the_plain_summary_says_how_the_step_ended() -> None:
    clock, stream = Clock(), io.StringIO()
    with plain(Scheduler(counts(), counts(processing=2)), clock, stream) as tasks:
        tick(tasks, clock)
        tasks.ended(3)
    assert stream.getvalue().splitlines()[-1] == (
        "daskstep: step fit: failed with exit code 3: peak 2 processing, peak 0 in memory, "
        "0 erred (1.0 s)"
    )


def test_rich_shows_nothing_for_a_step_that_computes_nothing() -> None:
    clock = Clock()
    console, screen = terminal()
    with StepProgress(
        "check", 0, 1, Scheduler(counts()), console=console, clock=clock, background=False
    ) as tasks:
        tick(tasks, clock)
    assert "check" not in screen.getvalue()


# -- the run loop, with fakes --------------------------------------------------------------------
class Handle:
    """A step that runs for `waits` waits."""

    def __init__(self, waits: int) -> None:
        self.left = waits

    def wait(self, timeout: float) -> int | None:
        time.sleep(timeout)
        self.left -= 1
        return 0 if self.left <= 0 else None

    def signal(self, signum: int) -> None:
        self.left = 0


class Launcher:
    def __init__(self, waits: int) -> None:
        self.waits = waits

    def start(self, spec) -> Handle:
        return Handle(self.waits)


def loop_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheduler, reachable=True):
    from test_run_loop import FakeBackend, FakeLogs, workflow

    class Backend(FakeBackend):
        scheduler_reachable = reachable

        def task_counts(self, timeout: float = 2.0) -> dict[str, int]:
            return scheduler()

        def identity(self) -> dict:
            raise OSError("no identity here")

        def task_stream(self, start: float | None = None, timeout: float = 10.0) -> list:
            return []

    monkeypatch.setattr(run_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(run_module, "ALIVE_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(progress, "ASK_SECONDS", 0.05)
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)
    events: list[str] = []
    return run_module.Run(
        workflow(tmp_path, ["fit"]),
        Workspace(tmp_path).new_run(),
        backend=Backend(events),
        launcher=Launcher(waits=60),
        logs=FakeLogs(events),
    )


def test_the_run_loop_prints_a_step_s_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    growing = iter(range(10**6))

    def scheduler() -> dict[str, int]:
        n = next(growing)
        return counts(processing=2 if n else 0, memory=10 * n)

    assert loop_run(tmp_path, monkeypatch, scheduler).execute() == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("daskstep: step fit:")]
    assert len(lines) >= 3, err  # changes, then the summary
    assert re.fullmatch(
        r"daskstep: step fit: 2 processing, \d+ in memory, 0 erred \(.*\)", lines[0]
    )
    assert lines[-1].startswith("daskstep: step fit: peak 2 processing, peak ")
    assert err.index(lines[-1]) < err.index("daskstep: step fit finished")


@pytest.mark.parametrize("reachable", [True, False])
def test_counts_that_fail_or_cannot_be_had_never_fail_the_step(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reachable: bool,
) -> None:
    scheduler = Scheduler(RuntimeError("no counts"))
    assert loop_run(tmp_path, monkeypatch, scheduler, reachable).execute() == 0
    err = capsys.readouterr().err
    assert "daskstep: step fit finished" in err
    assert "daskstep: step fit:" not in err and "no counts" not in err
    assert scheduler.asked == (1 if reachable else 0)


# -- the Docker backend's counts, over the scheduler's HTTP --------------------------------------
@contextlib.contextmanager
def http_scheduler(body: bytes) -> Iterator[str]:
    class Counts(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/json/counts.json"
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(body if found else b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_docker_counts_come_from_the_schedulers_http_and_erred_may_be_missing() -> None:
    from daskstep.backends.docker import DockerBackend
    from daskstep.docker.scheduler_http import SchedulerHTTP

    backend = DockerBackend(client=object())
    body = b'{"processing": 7, "memory": 40, "waiting": 3, "released": 2, "tasks": 52}'
    with http_scheduler(body) as url:
        backend.http = SchedulerHTTP(url)
        assert backend.task_counts() == {
            "processing": 7,
            "waiting": 3,
            "memory": 40,
            "erred": 0,
            "released": 2,
        }
    with pytest.raises(OSError):  # gone: StepProgress shows nothing
        backend.task_counts(timeout=1)


# -- a real `daskstep run`: a few thousand tasks over a few seconds ------------------------------
JOB = script(
    """
    import os, time
    from distributed import Client, as_completed

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    futures = client.map(time.sleep, [0.02] * 1000, pure=False)
    for i, _ in enumerate(as_completed(futures), 1):
        if i % 250 == 0:
            print(f"finished {i} of 1000", flush=True)
    print("all done", flush=True)
    """
)
STEP_OUTPUT = ["finished 250 of 1000", "finished 1000 of 1000", "all done"]


def tasks_workflow(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    return write_workflow(
        tmp_path, [("work", ["python job.py"]), ("check", ["echo checked"])], threads=2
    )


def terminal_env() -> dict[str, str]:
    """As a user's terminal: nothing that forces rich one way or the other."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    env.update(TERM="xterm-256color")
    env.pop("TTY_INTERACTIVE", None)
    env.pop("TTY_COMPATIBLE", None)
    return env


def run_in_a_pty(argv: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """`argv` with stdout and stderr a pseudo-terminal of 120 columns; all it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=terminal_env()
    )
    os.close(slave)
    written = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not chunk:
                    break
                written += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
    return code, written.decode(errors="replace")


@pytest.mark.integration
@pytest.mark.slow
def test_a_terminal_shows_the_step_s_tasks_live(tmp_path: Path) -> None:
    spec = tasks_workflow(tmp_path)
    code, screen = run_in_a_pty([sys.executable, "-m", "daskstep", "run", str(spec)], tmp_path, 180)
    assert code == 0, screen
    live = re.findall(
        r"step work \(1/2\)\S*\s+\S*[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]\S* (\d+) done · (\d+) processing · "
        r"(\d+) waiting · (\d+) in memory",
        screen,
    )
    assert live, screen  # rich's live line, spinner and counts, the queued tasks as waiting
    assert max(int(memory) for *_, memory in live) > 0
    assert max(int(waiting) for _, _, waiting, _ in live) > 0
    assert ESCAPE in screen
    assert "✓" in screen and "peak " in screen  # the summary the line leaves
    for line in [*STEP_OUTPUT, "daskstep: step work finished", "checked"]:
        assert line in screen
    assert "step check (2/2)  " not in screen  # `echo` computes nothing: no task line


@pytest.mark.integration
@pytest.mark.slow
def test_what_is_left_on_a_terminal_is_not_garbled(tmp_path: Path) -> None:
    """The screen as tmux keeps it: the step's output and daskstep's lines whole, each on a line
    of its own, and the summary the live line left."""
    require(shutil.which("tmux") is not None, "tmux is not installed")
    spec = tasks_workflow(tmp_path)
    socket, finished = f"daskstep-progress-{os.getpid()}", tmp_path / "finished"
    command = f"{sys.executable} -m daskstep run {spec}; echo exit=$? > {finished}; sleep 600"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "60", command],
        env=terminal_env(),
        cwd=tmp_path,
        check=True,
        timeout=30,
    )
    try:
        deadline = time.monotonic() + 180
        while not finished.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        screen = subprocess.run(
            [*tmux, "capture-pane", "-p", "-J"], capture_output=True, text=True, timeout=30
        ).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    assert finished.read_text().strip() == "exit=0", screen
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    order = [
        "daskstep: step work (1/2) started",
        *STEP_OUTPUT,
        "daskstep: step work finished",
        "daskstep: step check (2/2) started",
        "checked",
        "daskstep: step check finished",
    ]
    assert [line for line in lines if line in order] == order, screen
    summary = [line for line in lines if line.startswith("step work (1/2)")]
    assert len(summary) == 1, screen
    assert re.fullmatch(
        r"step work \(1/2\)  ✓ 1000 done · peak \d+ processing · peak \d+ waiting · "
        r"peak \d+ in memory · 0 erred · [\d.]+ s",
        summary[0],
    ), screen


@pytest.mark.integration
@pytest.mark.slow
def test_plain_output_has_count_lines_and_no_escapes(tmp_path: Path) -> None:
    spec = tasks_workflow(tmp_path)
    run = daskstep("run", str(spec), cwd=tmp_path, env=terminal_env())
    out, err = run.communicate(timeout=180)
    assert run.returncode == 0, err
    counts_lines = re.findall(
        r"^daskstep: step work: (?:\d+ done, )?(\d+) processing, (?:\d+ waiting, )?(\d+) in "
        r"memory, 0 erred \([\d.]+ s\)$",
        err,
        re.MULTILINE,
    )
    assert counts_lines, err
    assert any(int(memory) > 0 for _, memory in counts_lines)
    assert re.search(
        r"^daskstep: step work: 1000 done, peak \d+ processing, peak \d+ waiting, peak \d+ in "
        r"memory, 0 erred \([\d.]+ s\)$",
        err,
        re.MULTILINE,
    ), err
    assert "daskstep: step check:" not in err  # `echo` computes nothing
    assert ESCAPE not in err and ESCAPE not in out
    assert all(line in out for line in STEP_OUTPUT)
