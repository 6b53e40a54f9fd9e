"""Runs the step's commands as a process group, forwards signals to it, enforces the step
timeout, reaps zombies when we are PID 1, and measures the tree's peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time

from entrypoint.core import RunResult
from entrypoint.lifetime import die_with_parent, parent_pid

try:  # optional: a finer peak-RSS measure (the whole tree, sampled)
    import psutil
except Exception:  # pragma: no cover - depends on the image
    psutil = None

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# The step tree's memory is sampled this often; getrusage gives a floor for what sampling misses.
RSS_SAMPLE_INTERVAL = 0.5


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: a child killed by signal n gives 128+n."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class SignalForwarder:
    """Forwards signals to the current child's group; wakes the run loop on any signal."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.pending: list[int] = []
        self.terminating_since: float | None = None
        self.terminating_signal: int | None = None
        self._old: dict[int, object] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._old_wakeup = -1
        self._installed = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "SignalForwarder":
        if self._installed:
            os.set_blocking(self._wake_w, False)
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
            for sig in (*FORWARDED, signal.SIGCHLD):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            for sig, old in self._old.items():
                signal.signal(sig, old)  # type: ignore[arg-type]
            signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCHLD:
            return
        self.deliver(signum)

    def deliver(self, signum: int) -> None:
        if signum in TERMINATING and self.terminating_since is None:
            self.terminating_since = time.monotonic()
            self.terminating_signal = signum
        if self.target is None:
            self.pending.append(signum)
        else:
            _kill_group(self.target, signum)

    def attach(self, pgid: int) -> None:
        self.target = pgid
        for signum in self.pending:
            _kill_group(pgid, signum)
        self.pending.clear()

    def sleep(self, seconds: float) -> None:
        """Sleep until a signal arrives or `seconds` pass."""
        try:
            ready, _, _ = select.select([self._wake_r], [], [], seconds)
        except InterruptedError:
            return
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)


class ProcessRunner:
    def __init__(
        self,
        timeout: float | None = None,
        grace_period: float = 10.0,
        cwd: str | None = None,
        watch_parent: bool = False,
        poll_interval: float = 0.1,
    ) -> None:
        self.timeout = timeout
        self.grace_period = grace_period
        self.cwd = cwd
        self.watch_parent = watch_parent
        self.poll_interval = poll_interval
        self.parent = parent_pid()

    def run(self, commands: list[list[str]], env: dict[str, str]) -> RunResult:
        if self.watch_parent:
            die_with_parent(signal.SIGTERM, expected_parent=self.parent)
        deadline = time.monotonic() + self.timeout if self.timeout else None
        result = RunResult(exit_code=0, reason="Completed")
        with SignalForwarder() as forwarder:
            for argv in commands:
                if forwarder.terminating_signal is not None:
                    break
                result = self._run_one(argv, env, deadline, forwarder, result.peak_rss_bytes)
                if result.exit_code != 0:
                    break
        return result

    def _run_one(
        self,
        argv: list[str],
        env: dict[str, str],
        deadline: float | None,
        forwarder: SignalForwarder,
        peak: int | None,
    ) -> RunResult:
        started = time.time()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=self.cwd, start_new_session=True)
        except OSError as e:
            print(f"daskstep-entrypoint: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
            return RunResult(
                127 if isinstance(e, FileNotFoundError) else 126, "Error", peak, started
            )
        forwarder.attach(proc.pid)
        kill_at: float | None = None
        timed_out = False
        status = None
        sampled_at = 0.0
        while status is None:
            status = self._reap(proc.pid)
            if status is not None:
                break
            now = time.monotonic()
            if now - sampled_at >= RSS_SAMPLE_INTERVAL:  # a walk of /proc: not at every poll
                peak = max(peak or 0, _tree_rss(proc.pid))
                sampled_at = now
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                print(
                    f"daskstep-entrypoint: step timeout of {self.timeout:g} s exceeded; "
                    "stopping it",
                    file=sys.stderr,
                    flush=True,
                )
                _kill_group(proc.pid, signal.SIGTERM)
                kill_at = now + self.grace_period
            if self.watch_parent and os.getppid() != self.parent:
                self.watch_parent = False
                forwarder.deliver(signal.SIGTERM)
            if kill_at is None and forwarder.terminating_since is not None:
                kill_at = forwarder.terminating_since + self.grace_period
            if kill_at is not None and now >= kill_at:
                _kill_group(proc.pid, signal.SIGKILL)
            forwarder.sleep(self.poll_interval)
        proc.returncode = os.waitstatus_to_exitcode(status)
        forwarder.target = None
        _kill_group(proc.pid, signal.SIGKILL)  # leftovers of the step die with it
        # The largest single process reaped so far: a floor when sampling missed a short child.
        peak = max(peak or 0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
        code = exit_code_of(status)
        if timed_out:
            return RunResult(124, "TimeoutExceeded", peak, started)
        if os.WIFSIGNALED(status):
            return RunResult(code, "Signaled", peak, started)
        return RunResult(code, "Completed" if code == 0 else "Error", peak, started)

    @staticmethod
    def _reap(pid: int) -> int | None:
        """Our child's wait status once it exited; as PID 1, also reap every orphan."""
        if os.getpid() != 1:
            done, status = os.waitpid(pid, os.WNOHANG)
            return status if done else None
        found = None
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if done == 0:
                return found
            if done == pid:
                found = status


def _tree_rss(pid: int) -> int:
    if psutil is None:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total
