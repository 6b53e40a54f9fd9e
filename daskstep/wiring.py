"""The input stage and the wiring of `daskstep run`, as Tekton's main.go only parses flags and
wires parts: everything that can fail on the user's input fails here, before anything starts;
then each backend gets its step launcher and the run gets its parts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from daskstep.backends import ClusterBackend, get_backend
from daskstep.backends.batch import BatchBackend
from daskstep.credentials import Credentials, Secrets
from daskstep.engines.steps import engine_problems, is_engine, stage_engine_files
from daskstep.errors import InputError, Problem
from daskstep.extras import require_extra
from daskstep.inputs import check_inputs, prepare_workspace, stage_inputs
from daskstep.parts import StepLauncher
from daskstep.processes import LocalLogShipper, LocalStepLauncher, StatusGuard
from daskstep.progress import say
from daskstep.record import RunFolder, Workspace
from daskstep.run import Run
from daskstep.secret_env import forget_secret_variables, handed_over
from daskstep.spec import STEPS_PATH, Workflow


def prepare_run(
    workflow: Workflow,
    backend: str,
    workspace: Path,
    start_timeout: float = 300.0,
    secrets: str | None = None,
    allow_version_mismatch: bool = False,
    kubernetes: tuple[Any, str] | None = None,  # (KubeOptions, the reana.yaml's text)
    site: str | None = None,  # the batch site's settings file
    tls: bool = True,
) -> Run:
    engine = is_engine(workflow)  # cwl or snakemake: the engine runs as one step (engines/)
    check_inputs(workflow, *(engine_problems(workflow, backend) if engine else ()))
    if backend in ("docker", "kubernetes") and workflow.dask is not None:
        require_extra(backend, "--backend", f"the {backend} backend")
    if backend == "kubernetes":
        return _kubernetes_run(workflow, workspace, start_timeout, kubernetes, tls)
    systems = batch_systems(workflow, backend, site)
    if backend in BATCH and workflow.dask is not None:
        cluster: ClusterBackend | None = BatchBackend(systems[backend])
    else:
        cluster = get_backend(backend) if workflow.dask is not None else None
    found = Secrets.locate(secrets, {**os.environ, **handed_over()})
    forget_secret_variables()
    workspace = prepare_workspace(workspace)
    if cluster is not None and cluster.name == "docker":
        cluster.client, images = _checked_images(workflow, allow_version_mismatch)  # type: ignore[attr-defined]
    record = Workspace(workspace).new_run()
    credentials = None
    try:
        credentials = Credentials.for_run(
            workflow.needs_kerberos,
            workflow.needs_voms_proxy,
            found,
            logs=record.sidecars,
            shared=systems[backend].site.shared_directory if backend in systems else None,
            tls=_run_id(cluster) if tls and cluster is not None else None,
        )
        if cluster is not None and credentials is not None:
            cluster.tls = credentials.tls
        stage_inputs(workflow, workspace)
        if engine:
            stage_engine_files(workflow, workspace)
        launcher: StepLauncher = LocalStepLauncher(
            workspace, record.raw / ("engine.log" if engine else "job.log")
        )
        if cluster is not None and cluster.name == "docker":
            launcher = _docker_launcher(cluster, workflow, record, credentials, images)
        if any(step.compute_backend in COMPUTE_BACKEND for step in workflow.steps):
            launcher = _batch_launcher(systems, launcher, cluster, record)
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
    return Run(
        workflow,
        record,
        backend=cluster,
        launcher=launcher,
        logs=LocalLogShipper(record),
        credentials=credentials,
        start_timeout=start_timeout,
        guard=StatusGuard(record),
    )


BATCH = ("slurm", "htcondor")
COMPUTE_BACKEND = {"slurmcern": "slurm", "htcondorcern": "htcondor"}  # REANA's word -> ours


def _run_id(cluster: ClusterBackend) -> str:
    from daskstep.record import new_run_id

    return getattr(cluster, "run_id", None) or new_run_id()


def batch_systems(workflow: Workflow, backend: str, site: str | None) -> dict[str, Any]:
    """The batch systems the run needs (its backend's, its steps'), each reachable; else one
    line per missing one, before anything starts."""
    import shutil

    from daskstep.batch import system_for
    from daskstep.batch.site import load_site

    wanted = {backend} if backend in BATCH else set()
    if site is not None and not wanted:
        say(f"warning: --site is for --backend slurm or htcondor; {backend} ignores it")
    problems = []
    for i, step in enumerate(workflow.steps):
        system = COMPUTE_BACKEND.get(step.compute_backend or "")
        if system:
            wanted.add(system)
        elif step.compute_backend == "kubernetes" and backend != "kubernetes":
            say(f"warning: {STEPS_PATH}[{i}].compute_backend: kubernetes: the step runs with "
                f"the {backend} backend's steps")  # fmt: skip
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
    systems: dict[str, Any],
    other: StepLauncher,
    cluster: ClusterBackend | None,
    record: RunFolder,
) -> StepLauncher:
    from daskstep.batch.steps import BatchStepLauncher
    from daskstep.pack import pack
    from daskstep.record import new_run_id

    by_word = {word: systems[name] for word, name in COMPUTE_BACKEND.items() if name in systems}
    run_id = getattr(cluster, "run_id", None) or new_run_id()
    entrypoint = pack(record.folder / "entrypoint.pyz")
    return BatchStepLauncher(by_word, other, run_id, record, entrypoint)


def _checked_images(workflow: Workflow, allow_mismatch: bool) -> tuple[Any, dict[str, dict]]:
    """The engine can give each worker its threads, every image the run needs is here with
    python3, the cluster's has the `dask` CLI, and the Dask of each step that has one can talk
    to it; else one line per problem, before anything starts."""
    from daskstep import images
    from daskstep.backends.docker import cpu_problem

    assert workflow.dask is not None
    client = images.docker_client()
    problems = []
    if too_many := cpu_problem(workflow.dask.single_worker_threads, client.info().get("NCPU")):
        problems.append(too_many)
    cluster_image = workflow.dask.image
    wanted = [("workflow.resources.dask.image", cluster_image, "")]
    wanted += [
        (f"{STEPS_PATH}[{i}].environment", step.environment, step.name)
        for i, step in enumerate(workflow.steps)
        if step.environment
    ]
    found: dict[str, dict] = {}
    unusable: dict[str, str] = {}  # image -> why, said once for each field that names it
    for field, image, _ in wanted:
        if image not in found and image not in unusable:
            try:
                found[image] = images.inspect(client, image)
            except images.UnusableImage as e:
                unusable[image] = str(e)
        if image in unusable:
            problems.append(Problem(field, unusable[image]))
    if problems:
        raise InputError(problems)
    cluster = found[cluster_image]
    if not cluster.get("dask_cli"):
        problems.append(images.no_dask_cli(cluster_image))
    for field, image, step in wanted[1:]:
        mismatches = images.mismatches(found[image], cluster)
        if allow_mismatch:  # each step that differs is named, with both versions
            for key, mine, theirs in mismatches:
                say(
                    f"warning: {field}: step {step}: {image} has {key} {mine}, the cluster "
                    f"{cluster_image} {theirs}; running anyway (--allow-version-mismatch)"
                )
        else:
            problems += [
                images.mismatch_problem(field, image, cluster_image, m) for m in mismatches
            ]
    if problems:
        raise InputError(problems)
    return client, found


def _docker_launcher(
    cluster: ClusterBackend,
    workflow: Workflow,
    record: RunFolder,
    credentials: Credentials | None,
    images: dict[str, dict],
) -> StepLauncher:
    from daskstep.containers import DockerStepLauncher
    from daskstep.pack import pack

    assert workflow.dask is not None
    return DockerStepLauncher(
        cluster.client,  # type: ignore[attr-defined]
        cluster.run_id,  # type: ignore[attr-defined]
        record.workspace,
        pack(record.folder / "entrypoint.pyz"),
        record.raw / "job.log",
        default_image=workflow.dask.image,
        credentials=credentials.folder if credentials else None,
    )


def _kubernetes_run(
    workflow: Workflow,
    workspace: Path,
    start_timeout: float,
    kubernetes: tuple[Any, str] | None,
    tls: bool = True,
) -> Run:
    """The cluster and the steps run in the cluster; the credential sidecars too (in the pods,
    from the namespace's Secret), so none starts here. The log sidecar follows the run's pods
    into the local workspace."""
    from daskstep.backends.kubernetes import KubernetesBackend
    from daskstep.kube.api import KubernetesAPI
    from daskstep.kube.objects import KubeOptions
    from daskstep.kube.steps import KubernetesStepLauncher

    if workflow.dask is None:
        raise InputError(
            [
                Problem(
                    "workflow.resources.dask",
                    "is needed on --backend kubernetes (for now); "
                    "add dask: with image:, or use --backend local",
                )
            ]
        )
    options, reana_yaml = kubernetes or (KubeOptions(), workflow.path.read_text())
    options = dataclasses.replace(options, tls=tls)
    api = KubernetesAPI()  # a missing configuration is bad input: before anything is made
    forget_secret_variables()
    workspace = prepare_workspace(workspace)
    stage_inputs(workflow, workspace)
    record = Workspace(workspace).new_run()
    cluster = KubernetesBackend(api, options, workflow, reana_yaml, reaper=True)
    say(f"run {options.run_id} in namespace {options.namespace}")
    return Run(
        workflow,
        record,
        backend=cluster,
        launcher=KubernetesStepLauncher(api, cluster, workflow),
        logs=LocalLogShipper(record),
        start_timeout=start_timeout,
        guard=StatusGuard(record),
    )
