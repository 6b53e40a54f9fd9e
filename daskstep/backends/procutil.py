"""Linux process-lifetime helpers: the kernel, not the controller, guarantees teardown."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

import psutil

from entrypoint.lifetime import become_subreaper, die_with_parent

__all__ = [
    "become_subreaper",
    "controller_alive",
    "controller_mark",
    "die_with_parent",
    "kill_group",
    "kill_tree",
]


def controller_mark() -> str:
    """host:pid of this controller, put on what a run leaves outside this process tree
    (containers, batch jobs), so that a later `daskstep gc` can tell whether the run lives."""
    return f"{os.uname().nodename}:{os.getpid()}"


def controller_alive(mark: str) -> bool:
    """Whether the controller a mark names still runs (a mark from another host: no)."""
    host, _, pid = mark.rpartition(":")
    if host != os.uname().nodename or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_tree(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal each process and all of its descendants; missing processes are fine."""
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.extend(p.children(recursive=True))
            procs.append(p)
        except psutil.Error:
            continue
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
