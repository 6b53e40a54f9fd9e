"""What the Docker backend checks before anything starts: the engine can give each worker its
threads, and every image the run needs is usable and speaks the cluster's Dask. Each problem is
one line naming the field (exit 2), not the engine's refusal half-way through a start."""

from __future__ import annotations

from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.progress import say
from daskstep.workflow.spec import STEPS_PATH, Workflow


def cpu_problem(threads: int, engine_cpus: int | None) -> Problem | None:
    """Each worker gets as many CPUs as threads, and the engine refuses a container more CPUs
    than it has: said before anything starts, not as the engine's refusal half-way."""
    if not engine_cpus or threads <= engine_cpus:
        return None
    cpus = f"{engine_cpus} CPU{'s' if engine_cpus > 1 else ''}"
    return Problem(
        "workflow.resources.dask.single_worker_threads",
        f"{threads} is more than the {cpus} the Docker engine has; ask for at most {engine_cpus}",
    )


def checked_images(workflow: Workflow, allow_mismatch: bool) -> tuple[Any, dict[str, dict]]:
    """The engine can give each worker its threads, every image the run needs is here with
    python3, the cluster's has the `dask` CLI, and the Dask of each step that has one can talk
    to it; else one line per problem, before anything starts."""
    from daskstep.docker import images

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
