"""How the controller starts the local backend's launcher: forked from the controller's own image,
which has imported `distributed` already, when that launcher would be the same as a freshly
executed one; executed (`python -m daskstep.backends.launcher`) when it would not.

Why: an executed launcher imports `distributed` again before it can fork the scheduler, 0.3 s
that every run waited for (a LocalCluster's scheduler runs in its creator's warm process).

A fork is only the same as an exec if what a process reads once, at its start, is already what
the workers must have (`nanny_environment`'s "before"):
- PYTHONHASHSEED is the hash secret, fixed at the interpreter's start: the controller must have
  been started with the workers' seed (`daskstep run` executes itself so: see secret_env), or
  the workers would hash strings differently from run to run;
- the BLAS and OpenMP thread counts, which a loaded library read when it was loaded, are set
  again through threadpoolctl; glibc's MALLOC_* settings through mallopt();
- any other such variable (LD_PRELOAD, say) cannot be set after the start: the launcher is
  executed, as before;
- a controller that holds secrets it was handed (secret_env) executes the launcher, so that no
  worker's memory has a copy of them.

In the fork the launcher leaves the controller behind: a session of its own, only its pipes
and its log open (no other descriptor of the controller's, so a pipe the reaper waits on
closes when the controller dies), default signal handlers, fresh standard streams, and the
objects it inherited frozen (gc.freeze), so that none is collected and closes a descriptor
number the launcher has reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

from daskstep.secret_env import HANDOFF_ENV, holds_secrets

# Each loaded library's threads, as it would have read them from these variables at its load.
BLAS_THREADS = {
    "openblas": ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"),
    "mkl": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
    "blis": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
    "openmp": ("OMP_NUM_THREADS",),
}
# glibc's tunables from the environment, as mallopt() parameters (malloc.h)
MALLOPT = {
    "MALLOC_TRIM_THRESHOLD_": -1,
    "MALLOC_TOP_PAD_": -2,
    "MALLOC_MMAP_THRESHOLD_": -3,
    "MALLOC_MMAP_MAX_": -4,
    "MALLOC_ARENA_TEST": -7,
    "MALLOC_ARENA_MAX": -8,
}
SETTABLE = {"PYTHONHASHSEED", "NUMEXPR_NUM_THREADS", *MALLOPT}
SETTABLE.update(name for names in BLAS_THREADS.values() for name in names)


class ForkedLauncher:
    """The part of `subprocess.Popen` the backend uses, for a launcher that was forked."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): gone all the same
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("daskstep launcher", timeout or 0)
            time.sleep(0.005)
        return code


def why_not_fork(before: Mapping[str, str]) -> str | None:
    """None if a launcher forked from us is the same as one executed with `before` added."""
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return "not Linux"
    if holds_secrets() or HANDOFF_ENV in os.environ:
        return "this process holds secrets"
    if unsettable := sorted(set(before) - SETTABLE):
        return f"{', '.join(unsettable)} can only be set at a process's start"
    seed = before.get("PYTHONHASHSEED")
    if seed is not None and started_with("PYTHONHASHSEED") != seed:
        return f"this process was not started with PYTHONHASHSEED={seed}"
    return None


def started_with(name: str) -> str | None:
    """A variable of the environment this process was started with (os.environ may differ)."""
    try:
        block = Path("/proc/self/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in block.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def start_launcher(
    config: dict[str, Any], before: dict[str, str], workspace: Path, log: Path
) -> tuple[Any, bool]:
    """The launcher, given `config`; and whether it was forked (else it imports distributed
    itself, and the caller may import it meanwhile)."""
    why = why_not_fork(before)
    if why is None:
        try:
            import distributed  # noqa: F401  (the controller needs it anyway: before the fork)
            import threadpoolctl  # noqa: F401
        except ImportError as e:
            why = str(e)
        else:
            return fork_launcher(config, before, workspace, log), True
    with open(log, "ab") as stderr:
        stderr.write(f"daskstep: the launcher is executed, not forked: {why}\n".encode())
        stderr.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "daskstep.backends.launcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            cwd=workspace,
            env={**os.environ, **before},
        )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    return proc, False


def fork_launcher(
    config: dict[str, Any], before: dict[str, str], workspace: Path, log: Path
) -> ForkedLauncher:
    control_r, control_w = os.pipe()
    events_r, events_w = os.pipe()
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    for stream in (sys.stdout, sys.stderr):  # else the child could write our buffered output
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        with warnings.catch_warnings():  # 3.12 warns of a fork with threads: see the doc above
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        for fd in (control_r, control_w, events_r, events_w, log_fd):
            os.close(fd)
        raise
    if pid == 0:
        _be_the_launcher(config, before, workspace, (control_r, events_w, log_fd))
    for fd in (control_r, events_w, log_fd):
        os.close(fd)
    return ForkedLauncher(pid, os.fdopen(control_w, "wb"), os.fdopen(events_r, "rb"))


def _be_the_launcher(
    config: dict[str, Any], before: dict[str, str], workspace: Path, fds: tuple[int, int, int]
) -> NoReturn:
    code = 70
    try:
        gc.freeze()
        os.setsid()
        # above 2 first: a controller started with its stdin closed got a pipe as fd 0
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in fds]
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
        os.closerange(3, _max_fd())
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False))
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        _default_signals()
        os.chdir(workspace)
        sys.path.insert(0, str(workspace))  # as `python -m` run there would have it
        as_if_started_with(before)
        _fresh_offload_executor()
        from daskstep.backends.launcher import Config, serve

        code = serve(Config(**config))
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _max_fd() -> int:
    with contextlib.suppress(ValueError, OSError):
        return max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    return os.sysconf("SC_OPEN_MAX")


def _default_signals() -> None:
    """The controller's handlers (its cancel, its wakeup fd) are not the launcher's."""
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def as_if_started_with(before: Mapping[str, str]) -> None:
    """What a process executed with `before` in its environment would have read at its start:
    for its children, the environment; for what is loaded already, the same settings again."""
    os.environ.update(before)
    limits = {}
    for api, names in BLAS_THREADS.items():
        value = next((os.environ[n] for n in names if os.environ.get(n, "").isdigit()), None)
        if value is not None:
            limits[api] = int(value)
    if limits:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        for api, threads in limits.items():
            controller.select(internal_api=api).limit(limits=threads)
    if "numexpr" in sys.modules and os.environ.get("NUMEXPR_NUM_THREADS", "").isdigit():
        sys.modules["numexpr"].set_num_threads(int(os.environ["NUMEXPR_NUM_THREADS"]))
    settings = [(MALLOPT[n], int(v)) for n, v in before.items() if n in MALLOPT and v.isdigit()]
    if settings:
        import ctypes

        libc = ctypes.CDLL(None)
        for parameter, value in settings:
            with contextlib.suppress(AttributeError):  # not glibc
                libc.mallopt(parameter, value)


def _fresh_offload_executor() -> None:
    """distributed deserializes big messages in a thread pool; one the controller used has a
    thread that did not come along with the fork, and would never run what it is given."""
    utils = sys.modules.get("distributed.utils")
    executor = getattr(utils, "_offload_executor", None)
    if executor is not None:
        from concurrent.futures import ThreadPoolExecutor

        utils._offload_executor = ThreadPoolExecutor(  # type: ignore[union-attr]
            max_workers=1, thread_name_prefix="Dask-Offload"
        )
