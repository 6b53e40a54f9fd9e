"""Read a reana.yaml the way REANA does, but report every problem at once, one line each.

REANA validates with JSON Schema and fails on the first problem, sometimes deep inside the
cluster; here each problem names its field and the fix, so ``daskstep validate`` can print them
all before anything starts. Unknown fields are warnings, never errors, because REANA grows new
ones and a workflow written for a newer REANA should still run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.words import plural
from daskstep.workflow.findings import Report, _leaves_workspace, got
from daskstep.workflow.limits import (
    MEMORY_HINT,
    MEMORY_PATTERN,
    Limits,
    format_memory,
    kind,
    parse_memory,
    read_yaml,
    show,
)
from daskstep.workflow.reana import (
    DASK_KEYS,
    IMAGE_HINT,
    INPUTS_KEYS,
    OTHER_ENGINES,
    OUTPUTS_KEYS,
    RESOURCES_KEYS,
    SPECIFICATION_KEYS,
    STEP_KEYS,
    STEP_KEYS_LISTED,
    TOP_KEYS,
    WORKFLOW_KEYS,
    expand_parameters,
)

DASK_PATH = "workflow.resources.dask"
COMPUTE_BACKENDS = ("kubernetes", "slurmcern", "htcondorcern")
BATCH_STEP_KEYS = (
    "slurm_partition",
    "slurm_time",
    "htcondor_max_runtime",
    "htcondor_accounting_group",
    "htcondor_request_cpus",
    "htcondor_request_memory",
    "htcondor_request_disk",
)
STEPS_PATH = "workflow.specification.steps"
ENGINE_TYPES = {"cwl": "its .cwl file", "snakemake": "its Snakefile"}  # type -> what file is


@dataclass(frozen=True)
class DaskResources:
    """The cluster a workflow asked for, with the platform defaults filled in."""

    image: str
    number_of_workers: int
    single_worker_memory: str
    single_worker_threads: int
    autoscaler: bool | None = None  # the platform's switch (limits), None: the backend's

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.single_worker_memory)


@dataclass(frozen=True)
class Step:
    """One serial step; ``name`` defaults to "step-<n>" (1-based), as REANA leaves it empty."""

    name: str
    environment: str | None
    commands: tuple[str, ...]  # with inputs.parameters expanded, as REANA's serial engine does
    kerberos: bool = False
    voms_proxy: bool = False
    compute_backend: str | None = None  # REANA's: kubernetes, slurmcern or htcondorcern
    batch_options: tuple[tuple[str, str], ...] = ()  # slurm_* and htcondor_* step options


@dataclass(frozen=True)
class Workflow:
    """A checked reana.yaml: only values that passed validation reach the runner."""

    path: Path
    dask: DaskResources | None
    kerberos: bool
    voms_proxy: bool
    steps: tuple[Step, ...]
    input_files: tuple[str, ...]
    input_directories: tuple[str, ...]
    output_files: tuple[str, ...]
    output_directories: tuple[str, ...]
    test_files: tuple[str, ...] = ()  # tests.files: the Gherkin feature files of `daskstep test`
    type: str = "serial"  # or cwl, snakemake: an engine runs `file` (daskstep/engines/)
    file: str | None = None  # REANA's workflow.file, relative to the reana.yaml
    parameters: tuple[tuple[str, Any], ...] = ()  # inputs.parameters as written, for an engine

    @property
    def needs_kerberos(self) -> bool:
        """REANA's flag on the workflow or on any step: the sidecar then serves the whole run."""
        return self.kerberos or any(s.kerberos for s in self.steps)

    @property
    def needs_voms_proxy(self) -> bool:
        return self.voms_proxy or any(s.voms_proxy for s in self.steps)


def _above(path: str, value: object, key: str, maximum: object, r: Report) -> None:
    r.error(
        path,
        f"{value} is above the platform maximum of {maximum} (max_{key}); "
        f"ask for at most {maximum}",
    )


def _count(dask: dict, key: str, noun: str, limits: Limits, r: Report) -> int | None:
    """A whole number within 1..max; bools are rejected although Python calls them ints."""
    default, maximum = getattr(limits, f"default_{key}"), getattr(limits, f"max_{key}")
    if key not in dask:
        return default
    value, path = dask[key], f"{DASK_PATH}.{key}"
    if isinstance(value, bool) or not isinstance(value, int):
        unquote = " without quotes" if isinstance(value, str) else ""
        r.error(path, f"expected a whole number, got {got(value)}; write e.g. {key}: 2{unquote}")
    elif value < 1:
        r.error(path, f"{value} is not allowed; ask for at least 1 {noun}")
    elif value > maximum:
        _above(path, value, key, maximum, r)
    else:
        return value
    return None


def _memory(dask: dict, limits: Limits, r: Report) -> str | None:
    key = "single_worker_memory"
    if key not in dask:
        return limits.default_single_worker_memory
    value, path = dask[key], f"{DASK_PATH}.{key}"
    if not isinstance(value, str) or not MEMORY_PATTERN.match(value):
        r.error(path, f"{show(value)} is not a memory size; {MEMORY_HINT}")
    elif parse_memory(value) > limits.max_single_worker_memory_bytes:
        _above(path, value, key, limits.max_single_worker_memory, r)
    else:
        return value
    return None


def _dask(value: Any, limits: Limits, r: Report) -> DaskResources | None:
    if not isinstance(value, dict):
        r.error(
            DASK_PATH,
            f"expected a mapping, got {got(value)}; give at least image:, or remove dask",
        )
        return None
    before = r.errors()
    r.unknown_keys(value, DASK_KEYS, DASK_PATH)
    image = None
    if "image" not in value:
        r.error(f"{DASK_PATH}.image", f"missing; add the scheduler and worker image; {IMAGE_HINT}")
    else:
        image = r.image(value["image"], f"{DASK_PATH}.image")
    workers = _count(value, "number_of_workers", "worker", limits, r)
    threads = _count(value, "single_worker_threads", "thread", limits, r)
    memory = _memory(value, limits, r)
    if workers is not None and memory is not None:
        per_worker, total = parse_memory(memory), workers * parse_memory(memory)
        if total > limits.max_memory_limit_bytes:
            fit = limits.max_memory_limit_bytes // per_worker
            fix = (
                f"ask for at most {plural(fit, 'worker')} of {memory}, or less single_worker_memory"
                if fit
                else f"lower single_worker_memory to at most {limits.max_memory_limit}"
            )
            r.error(
                DASK_PATH,
                f"{plural(workers, 'worker')} x {memory} = {format_memory(total)} is above "
                f"the platform maximum of {limits.max_memory_limit} (max_memory_limit); {fix}",
            )
    if r.errors() > before or image is None or workers is None or threads is None:
        return None
    return DaskResources(image, workers, memory or "", threads, limits.autoscaler)


def _expand(command: str, parameters: dict[str, str], path: str, r: Report) -> str:
    text, messages = expand_parameters(command, parameters)
    for message in messages:
        r.warn(path, message)
    return text


def _commands(step: dict, path: str, parameters: dict[str, str], r: Report) -> tuple[str, ...]:
    path = f"{path}.commands"
    if "commands" not in step:
        r.error(path, "missing; add commands: with at least one shell command")
        return ()
    value = step["commands"]
    if isinstance(value, str):
        r.error(path, "is a string, not a list; write each command as a list item: - <command>")
        return ()
    if not isinstance(value, list):
        r.error(path, f"expected a list of shell commands, got {got(value)}; write - <command>")
        return ()
    if not value:
        r.error(path, "is empty; add at least one shell command")
    commands = []
    for j, item in enumerate(value):
        where = f"{path}[{j}]"
        if isinstance(item, dict):
            r.error(where, "is a mapping, not a command (a ': ' inside it); quote the command")
        elif not isinstance(item, str):
            r.error(where, f"expected a shell command, got {got(item)}; quote it")
        elif not item.strip():
            r.error(where, "is empty; remove it or write a shell command")
        else:
            commands.append(_expand(item, parameters, where, r))
    return tuple(commands)


def _step(item: Any, index: int, parameters: dict[str, str], r: Report) -> Step | None:
    path = f"{STEPS_PATH}[{index}]"
    if not isinstance(item, dict):
        r.error(path, f"expected a mapping with commands, got {got(item)}; write - commands: [..]")
        return None
    r.unknown_keys(item, STEP_KEYS, path, STEP_KEYS_LISTED)
    name = f"step-{index + 1}"
    if "name" in item:
        value = item["name"]
        if isinstance(value, str) and value.strip():
            name = value
        else:
            r.error(f"{path}.name", f"expected a non-empty string, got {got(value)}; quote it")
    environment = None
    if "environment" in item:
        environment = r.image(item["environment"], f"{path}.environment")
    commands = _commands(item, path, parameters, r)
    kerberos = r.boolean(item, "kerberos", f"{path}.kerberos")
    voms_proxy = r.boolean(item, "voms_proxy", f"{path}.voms_proxy")
    backend = item.get("compute_backend")
    if backend is not None and backend not in COMPUTE_BACKENDS:
        r.error(
            f"{path}.compute_backend",
            f"{show(backend)} is not one of REANA's compute backends; "
            f"use {', '.join(COMPUTE_BACKENDS)}, or remove it to run the step with the cluster",
        )
        backend = None
    options = []
    for key in BATCH_STEP_KEYS:
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            r.error(f"{path}.{key}", f"expected text or a number, got {got(value)}; quote it")
        else:
            options.append((key, str(value)))
    return Step(name, environment, commands, kerberos, voms_proxy, backend, tuple(options))


def _steps(workflow: dict, parameters: dict[str, str], r: Report) -> tuple[Step, ...]:
    if "specification" not in workflow and "file" in workflow:
        r.error(
            "workflow.file",
            "daskstep reads serial steps only inline; move them under workflow.specification.steps",
        )
        return ()
    example = "specification: with a steps: list"
    spec = r.mapping(workflow, "specification", "workflow.specification", example, required=True)
    if spec is None:
        return ()
    r.unknown_keys(spec, SPECIFICATION_KEYS, "workflow.specification")
    raw = spec.get("steps")
    if "steps" not in spec:
        r.error(STEPS_PATH, "missing; add steps: with at least one step that has commands")
    elif not isinstance(raw, list):
        r.error(STEPS_PATH, f"expected a list of steps, got {got(raw)}; write - commands: [..]")
    elif not raw:
        r.error(STEPS_PATH, "is empty; add at least one step with commands")
    items = raw if isinstance(raw, list) else []
    checked = [(i, _step(item, i, parameters, r)) for i, item in enumerate(items)]
    steps = [(i, step) for i, step in checked if step is not None]
    first: dict[str, int] = {}
    for i, step in steps:
        if step.name in first:
            r.warn(
                f"{STEPS_PATH}[{i}].name",
                f"{show(step.name)} is also the name of steps[{first[step.name]}]; "
                "give each step its own name so that logs and status tell them apart",
            )
        first.setdefault(step.name, i)
    return tuple(step for _, step in steps)


def _check_type(workflow: dict, r: Report) -> str:
    """The engine: serial (its steps are checked here), cwl or snakemake (they run a file)."""
    if "type" not in workflow:
        r.error("workflow.type", "missing; add type: serial (or cwl, snakemake with file:)")
        return "serial"
    value = workflow["type"]
    if not isinstance(value, str):  # a list or a mapping cannot be looked up by name
        r.error(
            "workflow.type",
            f"expected serial, cwl or snakemake, got {got(value)}; write type: serial",
        )
        return "unknown"
    if value == "serial" or value in ENGINE_TYPES:
        return value
    if value in OTHER_ENGINES:
        r.error(
            "workflow.type",
            f"{value} is not supported; daskstep runs serial, cwl and snakemake workflows",
        )
        return "unsupported"
    r.error(
        "workflow.type",
        f"expected serial, cwl or snakemake, got {got(value)}; write type: serial",
    )
    return "unknown"  # its steps or file would only add errors the type explains


def _engine_file(workflow: dict, kind: str, r: Report) -> str | None:
    """REANA's workflow.file for a cwl or snakemake workflow: a path inside the workspace."""
    what = ENGINE_TYPES[kind]
    if "specification" in workflow:
        r.warn(
            "workflow.specification",
            f"is read for serial workflows only; a {kind} workflow runs workflow.file",
        )
    if "file" not in workflow:
        r.error(
            "workflow.file",
            f"missing; a {kind} workflow needs file: with the path of {what}, "
            "relative to the reana.yaml",
        )
        return None
    value = workflow["file"]
    if not isinstance(value, str) or not value.strip():
        r.error("workflow.file", f"expected a path, got {got(value)}; write file: <{what}>")
    elif _leaves_workspace(value):
        r.error(
            "workflow.file",
            f"{show(value)} is outside the workspace; give a path relative to the "
            "workflow's folder, without a leading / or ..",
        )
    else:
        return value
    return None


def _parameters(inputs: dict | None, r: Report) -> dict[str, str]:
    if inputs is None:
        return {}
    example = "parameters: with one name: value per line"
    raw = r.mapping(inputs, "parameters", "inputs.parameters", example) or {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _document(document: dict, limits: Limits, path: Path, r: Report) -> Workflow | None:
    r.unknown_keys(document, TOP_KEYS, "")
    inputs = r.mapping(document, "inputs", "inputs", "inputs: with files: and directories:")
    outputs = r.mapping(document, "outputs", "outputs", "outputs: with files: and directories:")
    if inputs is not None:
        r.unknown_keys(inputs, INPUTS_KEYS, "inputs")
        r.mapping(inputs, "options", "inputs.options", "options: with one name: value per line")
    if outputs is not None:
        r.unknown_keys(outputs, OUTPUTS_KEYS, "outputs")
    tests = r.mapping(document, "tests", "tests", "tests: with files: [tests/x.feature]")
    if tests is not None:
        r.unknown_keys(tests, ("files",), "tests")
    test_files = r.strings(tests, "files", "tests.files", in_workspace=True)
    files = [  # in the order of the Workflow fields: inputs then outputs, files then dirs
        r.strings(section, key, f"{name}.{key}", in_workspace=True)
        for name, section in (("inputs", inputs), ("outputs", outputs))
        for key in ("files", "directories")
    ]
    parameters = _parameters(inputs, r)
    example = "workflow: with type: serial and specification: steps:"
    workflow = r.mapping(document, "workflow", "workflow", example, required=True)
    if workflow is None:
        return None
    r.unknown_keys(workflow, WORKFLOW_KEYS, "workflow")
    kind = _check_type(workflow, r)
    engine_file = _engine_file(workflow, kind, r) if kind in ENGINE_TYPES else None
    example = "resources: with dask:, kerberos: or voms_proxy:"
    resources = r.mapping(workflow, "resources", "workflow.resources", example) or {}
    r.unknown_keys(resources, RESOURCES_KEYS, "workflow.resources")
    kerberos = r.boolean(resources, "kerberos", "workflow.resources.kerberos")
    voms_proxy = r.boolean(resources, "voms_proxy", "workflow.resources.voms_proxy")
    r.strings(resources, "cvmfs", "workflow.resources.cvmfs")
    dask = _dask(resources["dask"], limits, r) if "dask" in resources else None
    steps = _steps(workflow, parameters, r) if kind == "serial" else ()
    engine = {"type": kind, "file": engine_file, "parameters": _given(inputs)}
    return Workflow(
        path, dask, kerberos, voms_proxy, steps, *files, test_files=test_files, **engine
    )


def _given(inputs: dict | None) -> tuple[tuple[str, Any], ...]:
    """inputs.parameters with their YAML types: an engine's inputs or config, not text."""
    raw = inputs.get("parameters") if inputs is not None else None
    return tuple((str(k), v) for k, v in raw.items()) if isinstance(raw, dict) else ()


def check(
    document: object, limits: Limits, path: Path = Path("reana.yaml")
) -> tuple[Workflow | None, list[Problem]]:
    """All problems (errors and warnings) of a parsed document; the Workflow only if no errors."""
    r = Report()
    workflow = None
    if document is None:
        r.error("", "the file is empty; write a reana.yaml with at least a workflow: section")
    elif not isinstance(document, dict):
        r.error(
            "",
            f"the top level is {kind(document)}, not a mapping; "
            "start the file with keys such as inputs:, workflow: and outputs:",
        )
    else:
        workflow = _document(document, limits, path, r)
    return (None if r.errors() else workflow), r.problems


def load_workflow(
    path: str | Path, limits: Limits, parameters: dict[str, str] | None = None
) -> tuple[Workflow, list[Problem]]:
    """Parse and check the file, with `parameters` (`-p NAME=VALUE`) over its
    inputs.parameters; raise InputError with every error, else return the warnings."""
    from daskstep.workflow.reana import override_parameters

    document, problems = read_yaml(path)
    if problems:
        raise InputError(problems, source=str(path))
    wrong = override_parameters(document, parameters or {})
    if wrong:
        raise InputError([Problem("--parameter", message) for message in wrong])
    workflow, problems = check(document, limits, Path(path))
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    if errors or workflow is None:
        raise InputError(errors, source=str(path), warnings=warnings)
    return workflow, warnings
