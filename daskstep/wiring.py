"""The input stage and the wiring of `daskstep run`, as Tekton's main.go only parses flags and
wires parts: everything that can fail on the user's input fails here, before anything starts;
then each backend gets its step launcher and the run gets its parts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from daskstep.backends import ClusterBackend
from daskstep.backends.registry import Kind, RunOptions, kind_of
from daskstep.credentials import Credentials, Secrets
from daskstep.engines.engine_step import engine_problems, is_engine, stage_engine_files
from daskstep.errors import InputError, Problem
from daskstep.extras import require_extra
from daskstep.processes import LocalLogShipper, LocalStepLauncher, StatusGuard
from daskstep.progress import say
from daskstep.record import RunFolder, Workspace, new_run_id
from daskstep.run import Run
from daskstep.scaling import Adapt
from daskstep.seams import StepLauncher
from daskstep.secret_env import forget_secret_variables, handed_over
from daskstep.workflow.inputs import check_inputs, prepare_workspace, stage_inputs
from daskstep.workflow.spec import STEPS_PATH, Workflow


def prepare_run(
    workflow: Workflow,
    backend: str,
    workspace: Path,
    start_timeout: float = 300.0,
    secrets: str | None = None,
    allow_version_mismatch: bool = False,
    own: Any = None,  # the backend's own options (Kind.options_from)
    site: str | None = None,  # the batch site's settings file
    tls: bool = True,
    adapt: bool | None = None,  # None: the site or limits file, else the backend's default
) -> Run:
    options = RunOptions(start_timeout, tls, site, allow_version_mismatch, own, adapt)
    kind = kind_of(backend)(workflow, options)
    engine = is_engine(workflow)  # cwl or snakemake: the engine runs as one step (engines/)
    check_inputs(workflow, *(engine_problems(workflow, kind) if engine else ()))
    if kind.extra and workflow.dask is not None:
        require_extra(kind.extra, "--backend", f"the {kind.name} backend")
    limits = adaptive_limits(workflow, kind)
    if remote := kind.remote_run(workspace):
        return _run(workflow, remote.record, remote.cluster, remote.launcher, None, options, limits)
    systems = batch_systems(workflow, kind, site)
    found = Secrets.locate(secrets, {**os.environ, **handed_over()})
    forget_secret_variables()
    workspace = prepare_workspace(workspace)
    if workflow.dask is not None:
        kind.check()
    record = Workspace(workspace).new_run()
    run_id = new_run_id()  # the cluster's objects, its TLS names, the batch jobs
    credentials = None
    try:
        credentials = Credentials.for_run(
            workflow.needs_kerberos,
            workflow.needs_voms_proxy,
            found,
            logs=record.sidecars,
            shared=kind.shared_folder(systems),
            tls=run_id if tls and workflow.dask is not None else None,
        )
        cluster = None
        if workflow.dask is not None:
            cluster = kind.cluster(run_id, credentials.tls if credentials else None, systems)
        stage_inputs(workflow, workspace)
        if engine:
            stage_engine_files(workflow, workspace)
        launcher: StepLauncher = LocalStepLauncher(
            workspace, record.raw / ("engine.log" if engine else "job.log")
        )
        if cluster is not None:
            launcher = kind.step_launcher(cluster, record, credentials, launcher)
        if any(step.compute_backend in COMPUTE_BACKEND for step in workflow.steps):
            launcher = _batch_launcher(systems, launcher, run_id, record)
    except BaseException:
        if credentials is not None:
            credentials.stop()  # nothing started yet: this removes the private folder
        Workspace(workspace).remove(record)  # bad input starts nothing, and records nothing
        raise
    if cluster is None:
        say("the workflow asks for no Dask cluster; running the steps without one")
    elif cluster.shares_step_environment:
        say(
            f"the {cluster.name} backend runs the scheduler, workers and steps in daskstep's "
            "own Python: resources.dask.image and the steps' environment are not used"
        )
    return _run(workflow, record, cluster, launcher, credentials, options, limits)


def adaptive_limits(workflow: Workflow, kind: Kind) -> Adapt | None:
    """Whether the workers follow the work: --adapt/--no-adapt, else the site file's
    `autoscaler`, else the limits file's (the platform's, as REANA's DASK_AUTOSCALER_ENABLED),
    else the backend's default; between its fewest and the workflow's number_of_workers."""
    if workflow.dask is None:
        return None
    on = kind.options.adapt
    if on is None and kind.options.site is not None:
        from daskstep.batch.site import load_site

        on = load_site(kind.options.site).autoscaler
    if on is None:
        on = workflow.dask.autoscaler
    if on is None:
        on = kind.adapt_default
    kind.options = dataclasses.replace(kind.options, adapt=on)
    if not on:
        return None
    most = workflow.dask.number_of_workers
    return Adapt(minimum=min(kind.adapt_minimum, most), maximum=most)


def _run(
    workflow: Workflow,
    record: RunFolder,
    cluster: ClusterBackend | None,
    launcher: StepLauncher,
    credentials: Credentials | None,
    options: RunOptions,
    adapt: Adapt | None,
) -> Run:
    return Run(
        workflow,
        record,
        backend=cluster,
        launcher=launcher,
        logs=LocalLogShipper(record),
        credentials=credentials,
        start_timeout=options.start_timeout,
        guard=StatusGuard(record),
        adapt=adapt,
    )


COMPUTE_BACKEND = {"slurmcern": "slurm", "htcondorcern": "htcondor"}  # REANA's word -> ours


def batch_systems(workflow: Workflow, kind: Kind, site: str | None) -> dict[str, Any]:
    """The batch systems the run needs (its backend's, its steps'), each reachable; else one
    line per missing one, before anything starts."""
    import shutil

    from daskstep.batch import system_for
    from daskstep.batch.site import load_site

    backend = kind.batch_system
    wanted = {backend} if backend else set()
    if site is not None and not wanted:
        say(f"warning: --site is for --backend slurm or htcondor; {kind.name} ignores it")
    problems = []
    for i, step in enumerate(workflow.steps):
        system = COMPUTE_BACKEND.get(step.compute_backend or "")
        if system:
            wanted.add(system)
        elif step.compute_backend == "kubernetes":  # (a kubernetes run never comes here)
            say(f"warning: {STEPS_PATH}[{i}].compute_backend: kubernetes: the step runs with "
                f"the {kind.name} backend's steps")  # fmt: skip
    if wanted:
        field = "--backend" if backend in wanted else "compute_backend"
        require_extra("batch", field, " and ".join(sorted(wanted)))
    settings = load_site(site) if wanted else None
    systems = {}
    for name in sorted(wanted):
        assert settings is not None
        system = system_for(name, settings)
        if shutil.which(system.submit) is None:
            field = "--backend" if name == backend else "compute_backend"
            problems.append(
                Problem(
                    field,
                    f"{name}: {system.submit} is not on PATH; run daskstep on a {name} "
                    f"submit node, or add the {name} client commands to PATH",
                )
            )
        systems[name] = system
    if problems:
        raise InputError(problems)
    return systems


def _batch_launcher(
    systems: dict[str, Any], other: StepLauncher, run_id: str, record: RunFolder
) -> StepLauncher:
    """Steps with REANA's compute_backend (slurmcern, htcondorcern) as batch jobs; the others
    as `other` runs them."""
    from daskstep.batch.step_launcher import BatchStepLauncher
    from daskstep.pack import pack

    by_word = {word: systems[name] for word, name in COMPUTE_BACKEND.items() if name in systems}
    entrypoint = pack(record.folder / "entrypoint.pyz")
    return BatchStepLauncher(by_word, other, run_id, record, entrypoint)
