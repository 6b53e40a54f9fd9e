"""Linux process-lifetime helpers: the kernel, not the controller, guarantees teardown."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

import psutil

from daskstep.record import controller_alive, controller_mark
from entrypoint.lifetime import become_subreaper, die_with_parent

_PR_SET_NAME = 15

__all__ = [
    "become_subreaper",
    "controller_alive",
    "controller_mark",
    "die_with_parent",
    "kill_group",
    "kill_tree",
    "set_name",
    "until_stopped",
]


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


def set_name(name: str) -> None:
    """What `ps`, `top` and psutil's name() show for this process (the kernel keeps 15 bytes):
    processes forked from one image would all show its name."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def until_stopped() -> None:
    """A server's life (`daskstep ui`, `daskstep serve`): until Ctrl-C or a SIGTERM, after which
    it closes in order instead of dying mid-request."""
    import asyncio  # not at import: the command line imports this module

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
