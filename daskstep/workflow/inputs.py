"""The input stage's file checks: the workspace, and the inputs REANA would upload into it."""

from __future__ import annotations

import shutil
from pathlib import Path

from daskstep.errors import InputError, Problem
from daskstep.workflow.findings import _leaves_workspace
from daskstep.workflow.spec import ENGINE_TYPES, Workflow


def prepare_workspace(workspace: Path) -> Path:
    """The folder the run writes into, made if missing; a bad one is the user's input error."""
    if workspace.exists() and not workspace.is_dir():
        message = f"{workspace} is a file, not a folder; give a folder (it is made if missing)"
        raise InputError([Problem("--workspace", message)])
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        message = f"{workspace} cannot be made ({e.strerror}); give a folder you can write to"
        raise InputError([Problem("--workspace", message)]) from None
    return workspace.resolve()


def _inputs(workflow: Workflow) -> list[tuple[str, str]]:
    """(field, name) of every declared input, e.g. ("inputs.files[0]", "analysis.py")."""
    kinds = (("files", workflow.input_files), ("directories", workflow.input_directories))
    return [(f"inputs.{k}[{i}]", name) for k, names in kinds for i, name in enumerate(names)]


def input_problems(workflow: Workflow) -> list[Problem]:
    """What is missing on disk beside the reana.yaml: every declared input, as REANA's upload
    demands, and a cwl/snakemake workflow's file and input file. `validate` and the input
    stage of `run` both ask this, so they agree."""
    source = workflow.path.parent.resolve()
    problems = [
        Problem(field, f"{name!r} does not exist in {source}; add it there, or remove it here")
        for field, name in _inputs(workflow)
        if not (source / name).exists()
    ]
    engine = workflow.type in ENGINE_TYPES
    return problems + (_engine_file_problems(workflow) if engine else [])


def _engine_file_problems(workflow: Workflow) -> list[Problem]:
    """A cwl or snakemake workflow's file and its input file (REANA's inputs.parameters.input)
    must be files beside the reana.yaml."""
    problems = []
    source = workflow.path.parent.resolve()
    if workflow.file and not (source / workflow.file).is_file():
        problems.append(
            Problem(
                "workflow.file",
                f"{workflow.file!r} is not a file in {source}; add it there, or fix the path",
            )
        )
    given = dict(workflow.parameters).get("input")
    if isinstance(given, str) and _leaves_workspace(given):
        problems.append(
            Problem(
                "inputs.parameters.input",
                f"{given!r} is outside the workspace; give a path relative to the "
                "workflow's folder, without a leading / or ..",
            )
        )
    elif given is not None and not (isinstance(given, str) and (source / given).is_file()):
        what = "the CWL job order" if workflow.type == "cwl" else "the Snakemake config file"
        problems.append(
            Problem(
                "inputs.parameters.input",
                f"{given!r} is not a file in {source}; give the path of {what} there",
            )
        )
    return problems


def check_inputs(workflow: Workflow, *more: Problem) -> None:
    """The input problems, with `more` found by the caller, as one error (one line each)."""
    problems = [*input_problems(workflow), *more]
    if problems:
        raise InputError(problems, source=str(workflow.path))


def stage_inputs(workflow: Workflow, workspace: Path) -> None:
    """Copy `inputs` into a separate workspace, as REANA does; nothing to do in place."""
    source = workflow.path.parent.resolve()
    if workspace.resolve() == source:
        return
    for _field, name in _inputs(workflow):
        src, dst = source / name, workspace / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
