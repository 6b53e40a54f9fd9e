"""Tie a process's life to its parent's, with the kernel's help where it offers it (Linux)."""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # only when asked: it is a slow import for a wrapper that starts every step

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_pid() -> int:
    """The parent as `daskstep run` names it (DASKSTEP_PARENT_PID): it may have died before we
    could ask, and then getppid() already names the reaper that adopted us."""
    return int(os.environ.get("DASKSTEP_PARENT_PID") or os.getppid())


def die_with_parent(sig: int = signal.SIGTERM, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` when our parent dies; False where unsupported.

    If the parent already died (between fork and this call), send it now.
    """
    ok = _prctl(_PR_SET_PDEATHSIG, int(sig))
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)
    return ok


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to us, so we can still find and reap them."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)
