"""Which backends `daskstep run` knows, and what each brings to a run.

As dask-jobqueue names its job systems in one place, a backend is one module that defines a
`Kind` (its name, the extra it needs, its checks, how its cluster is built, its step launcher)
and one line in KINDS. Nothing outside a backend's own module tests a backend's name:
`daskstep.wiring` looks the kind up and asks it (docs/architecture.md, "Adding a backend").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from daskstep.errors import InputError, Problem

if TYPE_CHECKING:
    from daskstep.backends.base import ClusterBackend
    from daskstep.credentials import Credentials
    from daskstep.record import RunFolder
    from daskstep.seams import StepLauncher
    from daskstep.workflow.spec import Workflow

# name -> "module:Kind", imported only when asked for: `daskstep run` on the local backend
# imports neither the Docker SDK nor the kubernetes client.
KINDS: dict[str, str | type[Kind]] = {
    "local": "daskstep.backends.local:LocalKind",
    "docker": "daskstep.backends.docker:DockerKind",
    "kubernetes": "daskstep.backends.kubernetes:KubernetesKind",
    "slurm": "daskstep.backends.batch:SlurmKind",
    "htcondor": "daskstep.backends.batch:HTCondorKind",
}


@dataclass(frozen=True)
class RunOptions:
    """What the command line says about the cluster; each kind takes what concerns it."""

    start_timeout: float = 300.0
    tls: bool = True
    site: str | None = None  # slurm, htcondor: the batch site's settings file
    allow_version_mismatch: bool = False  # docker: step images whose Dask differs
    own: Any = None  # the backend's own options: what its Kind.options_from made of the flags
    adapt: bool | None = None  # the workers follow the work (--adapt; None: the files say)


@dataclass(frozen=True)
class RemoteRun:
    """What a kind that runs everything elsewhere hands back for the run loop."""

    cluster: ClusterBackend
    launcher: StepLauncher
    record: RunFolder


class Kind:
    """A backend as `daskstep run` wires it. The defaults are the common case: a cluster beside
    the controller, the steps as processes here, the credential sidecars here."""

    name: ClassVar[str]
    extra: ClassVar[str | None] = None  # the pip extra that brings its packages
    runs_engines: ClassVar[bool] = False  # cwl and snakemake workflows (run here, as one step)
    batch_system: ClassVar[str | None] = None  # its workers are jobs of this batch system
    collects: ClassVar[bool] = False  # `daskstep gc` removes what its dead runs left
    # adaptive scaling (scaling.py): whether on when neither the command line nor the
    # site or limits file says, and the fewest workers it keeps (1 where a cold start costs a
    # step seconds it did not need to wait)
    adapt_default: ClassVar[bool] = False
    adapt_minimum: ClassVar[int] = 1

    def __init__(self, workflow: Workflow, options: RunOptions) -> None:
        self.workflow = workflow
        self.options = options

    @classmethod
    def options_from(cls, args: Any) -> Any:
        """The backend's own options from the command line's flags (RunOptions.own), checked:
        a bad one is an InputError."""
        return None

    @classmethod
    def gc(cls, everything: bool) -> None:
        """`daskstep gc`: remove (and say) what runs whose controller is gone left behind;
        with `everything`, live runs' too."""
        collectors = [n for n in names() if kind_of(n).collects]
        raise InputError(
            [
                Problem(
                    "--backend",
                    f"a {cls.name} run leaves nothing for gc to remove; use one of "
                    + ", ".join(collectors),
                )
            ]
        )

    def check(self) -> None:
        """What can fail on the user's input (images, versions, CPUs), before anything starts:
        raise InputError."""

    def cluster(self, run_id: str, tls: Any, systems: dict[str, Any]) -> ClusterBackend:
        """The cluster of a workflow with resources.dask; `systems` are the run's batch
        systems, by name."""
        raise NotImplementedError

    def shared_folder(self, systems: dict[str, Any]) -> str | None:
        """Where the run's private folder goes when its workers must see it (batch nodes)."""
        return None

    def step_launcher(
        self,
        cluster: ClusterBackend,
        record: RunFolder,
        credentials: Credentials | None,
        here: StepLauncher,
    ) -> StepLauncher:
        """How the steps run with this cluster; `here` runs them as processes beside us."""
        return here

    def remote_run(self, workspace: Path) -> RemoteRun | None:
        """The run's parts when all of it happens elsewhere (Kubernetes: the cluster, the steps
        and the credential sidecars run in the cluster); None for the common wiring."""
        return None

    @classmethod
    def bare_cluster(cls) -> ClusterBackend:
        """A cluster without a workflow's settings, for the benches and tests."""
        raise InputError([Problem("--backend", f"{cls.name} needs a workflow's settings")])


def names() -> list[str]:
    return list(KINDS)


def kind_of(name: str) -> type[Kind]:
    where = KINDS.get(name)
    if where is None:
        raise InputError(
            [Problem("--backend", f"'{name}' is not a backend; use one of {', '.join(KINDS)}")]
        )
    if isinstance(where, str):
        module, _, attribute = where.partition(":")
        where = getattr(importlib.import_module(module), attribute)
    assert isinstance(where, type) and issubclass(where, Kind)
    return where


def register(kind: type[Kind] | str, name: str | None = None) -> None:
    """One more backend: a Kind, or "module:Kind" to import when it is asked for."""
    if isinstance(kind, str):
        assert name is not None, "a kind given by its import path needs its name"
        KINDS[name] = kind
    else:
        KINDS[name or kind.name] = kind
