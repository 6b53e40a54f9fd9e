"""What each part beyond the embedded local backend needs installed: `pip install daskstep`
brings the local backend, as the Dask ecosystem keeps dask-kubernetes and dask-jobqueue in
packages of their own; the rest are extras (cwl and snakemake's engines, `daskstep[engines]`,
are checked with the workflow: engines/engine_step.py). A part whose extra is missing says which
one, in one line, exit 2, before anything starts."""

from __future__ import annotations

from importlib.util import find_spec

from daskstep.errors import InputError, Problem

EXTRAS = {
    "docker": ("docker",),  # the Docker backend, its log source, images, gc
    "kubernetes": ("kubernetes", "dask_kubernetes"),  # run and render on Kubernetes
    "batch": ("dask_jobqueue",),  # the Slurm and HTCondor backends and steps
    "report": ("matplotlib",),  # the report's summary figure, report.png
    "serve": ("authlib",),  # daskstep serve's OIDC issuer (device flow, JWT access tokens)
}


def missing(extra: str) -> list[str]:
    return [module for module in EXTRAS[extra] if find_spec(module) is None]


def require_extra(extra: str, field: str, what: str) -> None:
    """Bad input (exit 2) naming the extra to install when `extra`'s modules are not here."""
    gone = missing(extra)
    if gone:
        names = ", ".join(name.replace("_", "-") for name in gone)
        raise InputError(
            [
                Problem(
                    field,
                    f"{what} needs {names}, which is not installed; "
                    f"pip install 'daskstep[{extra}]'",
                )
            ]
        )
