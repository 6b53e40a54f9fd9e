"""Progress while `daskstep run` runs, on stderr: live lines drawn by rich on a terminal, plain
lines (one per change, no control characters) otherwise, as in CI logs.

Two displays: the workers registering (`WaitProgress`), and each step's tasks as the scheduler
counts them (`StepProgress`). While one of them is up on a terminal, daskstep's own messages
(`say`) and the step's output go through its console, above the live line: written past it,
they would overwrite the line, and its next redraw would erase them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

PLAIN_SECONDS = 5.0  # plain output: at most one line of counts this often
ASK_SECONDS = 1.0  # how often the scheduler is asked for its counts
GIVE_UP_AFTER = 3  # failed asks in a row after which a step's counts are left alone

Counts = Mapping[str, int]

_lock = threading.Lock()
_console: Any = None  # the rich console of the live display that is up, if any


def say(message: str) -> None:
    """One line from daskstep: above the live display when one is up, else plain on stderr.
    An error is `error: …` with no `daskstep: ` before it, as the CLI's own errors are, so
    that one pattern finds every error line daskstep prints."""
    line = message if message.startswith("error: ") else f"daskstep: {message}"
    with _lock:
        console = _console
    if console is not None:
        console.out(line, highlight=False)
    else:
        print(line, file=sys.stderr, flush=True)


def _show(console: Any) -> None:
    global _console
    with _lock:
        _console = console


def _hide(console: Any) -> None:
    global _console
    with _lock:
        if _console is console:
            _console = None


class WaitProgress:
    """The workers registering: a bar on a terminal, a line per change otherwise."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._rich = None
        self._task = None

    def __enter__(self) -> WaitProgress:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.what, total=self.total)
            _show(self._rich.console)
        return self

    def update(self, done: int, total: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done, total=total)
        else:
            elapsed = time.monotonic() - self.started
            print(f"daskstep: {self.what}: {done}/{total} ({elapsed:.1f} s)", file=self.stream)

    def __exit__(
        self, kind: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._rich is not None:
            _hide(self._rich.console)
            self._rich.stop()


Numbers = tuple[int, int, int, int, int]  # processing, waiting, in memory, erred, done


def task_numbers(counts: Counts) -> Numbers:
    """(processing, waiting, in memory, erred, done); a state the scheduler did not name is 0.
    Waiting is every task not yet running: waiting for its inputs, or queued for a thread when
    the counts name `queued` (daskstep's own schedulers do; `get_task_prefix_states` does not).
    Done is the scheduler's running total of tasks that finished, when it says it."""

    def n(state: str) -> int:
        return int(counts.get(state) or 0)

    waiting = n("waiting") + n("queued") + n("no-worker")
    return n("processing"), waiting, n("memory"), n("erred"), n("done")


def describe(numbers: Numbers, peak: bool = False) -> list[str]:
    """The counts in words; done and waiting only when there are some, to keep it short."""
    processing, waiting, memory, erred, done = numbers
    most = "peak " if peak else ""
    words = [f"{done} done"] if done else []
    words.append(f"{most}{processing} processing")
    if waiting:
        words.append(f"{most}{waiting} waiting")
    return [*words, f"{most}{memory} in memory", f"{erred} erred"]


class StepProgress:
    """One step's tasks, as the scheduler counts them, about once a second.

    The numbers are the scheduler's live ones (processing, waiting, in memory, erred), not a
    count of tasks done: the scheduler forgets a task as soon as no client holds it, so its
    totals say what exists now, and a "done" derived from them would silently undercount
    (dask.bag's intermediate results vanish within a second). Live numbers answer what a
    physicist watching asks: is it moving (processing), is memory filling up, did anything fail.
    They are shown from the first change against what the scheduler held when the step started
    (usually nothing: the previous step's client left, so its tasks are forgotten), so a step
    that computes nothing prints nothing. At the end, one summary line gives the peaks seen and
    the most tasks erred at once.

    `counts` raising, or None (a scheduler daskstep cannot reach), means no task line; never an
    error. The asks run in a thread of their own, so a slow scheduler never holds up the step's
    loop (its cancel, its liveness check).
    """

    def __init__(
        self,
        step: str,
        index: int,
        steps: int,
        counts: Callable[[], Counts] | None,
        *,
        stream: TextIO | None = None,
        console: Any = None,
        clock: Callable[[], float] = time.monotonic,
        plain_seconds: float | None = None,
        background: bool = True,
    ) -> None:
        self.step = step
        self.title = f"step {step} ({index + 1}/{steps})"
        self.counts = counts
        self.stream = stream or sys.stderr
        self.console = console  # a rich console: live lines; None: decided by the stream
        self.clock = clock
        self.plain_seconds = PLAIN_SECONDS if plain_seconds is None else plain_seconds
        self.background = background
        self.started = clock()
        self._state = threading.Lock()
        self._baseline: Numbers | None = None
        self._now: Numbers | None = None
        self._peak: Numbers = (0, 0, 0, 0, 0)
        self._seen = False  # tasks changed since the step started
        self._printed: Numbers | None = None
        self._printed_at: float | None = None
        self._failures = 0
        self._gave_up = counts is None
        self._closed = False
        self._next_ask = self.started
        self._asking: threading.Thread | None = None
        self._live: Any = None
        self._final = False  # the live line's last render: the summary
        self._spinner: Any = None
        self._output: _StepOutput | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> StepProgress:
        if self.counts is None:
            return self
        if self.console is None and self.stream.isatty():
            from rich.console import Console

            self.console = Console(file=self.stream)
        if self.console is not None:
            try:
                self._start_live()
            except Exception:  # a terminal rich cannot draw on: no task line
                self._gave_up = True
                with contextlib.suppress(Exception):
                    self._live.stop()
                _hide(self.console)
                self._live = None
        self.poll()  # what the scheduler holds before the step's own tasks
        return self

    def __exit__(
        self, kind: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._gave_up and self._seen:  # one last ask: the summary says how it ended
            if self._asking is not None:
                self._asking.join(ASK_SECONDS * 2)
            if self._asking is None or not self._asking.is_alive():
                self._ask()
        with self._state:
            self._closed = True
            seen = self._seen
        if self._live is not None:
            if self._output is not None:
                self._output.stop()  # its last lines first, above the summary
            self._final = True
            self._live.refresh()
            _hide(self.console)
            self._live.stop()
        elif seen:
            print(f"daskstep: {self.summary()}", file=self.stream, flush=True)

    def _start_live(self) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots", style="cyan")
        self._live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=False,  # the last render, the summary, stays
            redirect_stdout=False,  # the step's output is taken at the file descriptor
        )
        self._live.start()
        _show(self.console)
        if _StepOutput.needed(self.console):
            self._output = _StepOutput(self.console)
            self._output.start()

    # -- asking the scheduler -------------------------------------------------------------------
    def poll(self) -> None:
        """Ask for the counts, at most every ASK_SECONDS, unless an ask is still out."""
        if self._gave_up or self._closed or self.clock() < self._next_ask:
            return
        if self._asking is not None and self._asking.is_alive():
            return
        self._next_ask = self.clock() + ASK_SECONDS
        if not self.background:
            self._ask()
            return
        try:
            self._asking = threading.Thread(target=self._ask, daemon=True, name="step-progress")
            self._asking.start()
        except RuntimeError:  # no thread to be had now: the next poll tries again
            self._asking = None

    def _ask(self) -> None:
        assert self.counts is not None
        try:
            counts = self.counts()
        except Exception:  # a count is news, never a failure of the step
            self._failures += 1
            if self._baseline is None or self._failures >= GIVE_UP_AFTER:
                self._gave_up = True  # this scheduler cannot be asked so; stop trying
            return
        self._failures = 0
        self.update(counts)

    def update(self, counts: Counts) -> None:
        numbers = task_numbers(counts)
        with self._state:
            if self._closed:
                return
            if self._baseline is None:
                self._baseline = numbers
            # done counts this step's tasks: the scheduler's total goes on from earlier steps
            numbers = (*numbers[:4], max(numbers[4] - self._baseline[4], 0))
            self._now = numbers
            self._seen = self._seen or numbers[:4] != self._baseline[:4] or numbers[4] > 0
            if self._seen:
                self._peak = tuple(map(max, self._peak, numbers))  # type: ignore[assignment]
            if self._live is None and self._seen:
                self._plain_line(numbers)

    def _plain_line(self, numbers: Numbers) -> None:
        now = self.clock()
        if numbers == self._printed:
            return
        if self._printed_at is not None and now - self._printed_at < self.plain_seconds:
            return
        self._printed, self._printed_at = numbers, now
        words = ", ".join(describe(numbers))
        elapsed = now - self.started
        print(
            f"daskstep: step {self.step}: {words} ({elapsed:.1f} s)", file=self.stream, flush=True
        )

    # -- what is shown --------------------------------------------------------------------------
    def summary(self) -> str:
        """`step fit: peak 120 processing, peak 3400 in memory, 0 erred (12.3 s)`"""
        words = ", ".join(describe(self._peak, peak=True))
        return f"step {self.step}: {words} ({self.clock() - self.started:.1f} s)"

    def _render(self) -> Any:
        from rich.text import Text

        with self._state:
            numbers, seen = self._now, self._seen
        if not seen or numbers is None:
            return _nothing()
        if self._final:
            return self._summary_text()
        frame = self._spinner.render(self.clock())
        return Text.assemble(
            (self.title, "bold"), "  ", frame, " ", *self._words(numbers, peak=False)
        )

    def _summary_text(self) -> Any:
        from rich.text import Text

        mark = ("✗", "bold red") if self._peak[3] else ("✓", "bold green")
        return Text.assemble((self.title, "bold"), "  ", mark, " ", *self._words(self._peak, True))

    def _words(self, numbers: Numbers, peak: bool) -> list[Any]:
        words: list[Any] = []
        for word in describe(numbers, peak):
            style = "red" if word.endswith("erred") and numbers[3] else ""
            words += [(word, style), " · "]
        return [*words, f"{self.clock() - self.started:.1f} s"]


def _nothing() -> Any:
    from rich.console import Group

    return Group()  # zero lines: the live display takes no room


class _StepOutput:
    """While a live line is up, our stdout (where the step's output is copied), when it is the
    same terminal as the display's, is read through a pipe and printed by the console above the
    line: written straight to the terminal, it would overwrite the line and be erased by its
    next redraw. The file descriptor is taken, as the step's copying thread writes to it."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._saved: int | None = None
        self._read: int | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def needed(console: Any) -> bool:
        try:
            return os.isatty(1) and os.path.sameopenfile(1, console.file.fileno())
        except (AttributeError, OSError, ValueError):
            return False  # a console on something without a descriptor (tests, a StringIO)

    def start(self) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        self._saved = os.dup(1)
        self._read, write = os.pipe()
        os.dup2(write, 1)
        os.close(write)
        self._thread = threading.Thread(target=self._copy, daemon=True, name="step-output")
        self._thread.start()

    def _copy(self) -> None:
        assert self._read is not None
        pending = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(self._read, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                if lines:
                    self._print(lines)
        if pending:
            self._print([pending])

    def _print(self, lines: list[bytes]) -> None:
        shown = []
        for raw in lines:
            segments = [s for s in raw.decode(errors="replace").split("\r") if s]  # a bar's last
            shown.append(segments[-1] if segments else "")
        with contextlib.suppress(Exception):  # reading on matters more: else the step blocks
            self.console.out("\n".join(shown), highlight=False)

    def stop(self) -> None:
        """Our stdout back; what was in the pipe is printed before this returns."""
        if self._saved is None:
            return
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(self._saved, 1)  # the pipe's last writer closes: its reader sees the end
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():  # a child kept the pipe: let it be read to its end
                return
        if self._read is not None:
            with contextlib.suppress(OSError):
                os.close(self._read)
            self._read = None
