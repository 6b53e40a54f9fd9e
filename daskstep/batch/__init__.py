"""Batch systems (Slurm, HTCondor): site settings, worker and step jobs, the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daskstep.batch.site import Site
    from daskstep.batch.systems import BatchSystem


def system_for(name: str, site: Site) -> BatchSystem:
    """`slurm` or `htcondor`, each module imported only when asked for."""
    if name == "htcondor":
        from daskstep.batch.htcondor import HTCondor

        return HTCondor(site)
    from daskstep.batch.systems import Slurm

    return Slurm(site)
