"""Batch systems (Slurm, HTCondor): site settings, worker and step jobs, the queue."""

from __future__ import annotations

import contextlib
import importlib
import signal
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daskstep.batch.site import Site
    from daskstep.batch.systems import BatchSystem


def jobqueue(module: str) -> ModuleType:
    """`dask_jobqueue.<module>`. Importing dask_jobqueue sets a SIGINT handler of its own
    (its runner's `sys.exit()`), which took Ctrl-C from `daskstep run`: the run exited 0 in
    the middle of its teardown, without its report. The handlers we had are put back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return importlib.import_module(f"dask_jobqueue.{module}")
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was set
                    signal.signal(signum, handler)


def system_for(name: str, site: Site) -> BatchSystem:
    """`slurm` or `htcondor`, each module imported only when asked for."""
    if name == "htcondor":
        from daskstep.batch.htcondor import HTCondor

        return HTCondor(site)
    from daskstep.batch.systems import Slurm

    return Slurm(site)
