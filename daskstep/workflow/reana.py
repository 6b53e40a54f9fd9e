"""REANA's vocabulary: the fields it knows, its image pattern, and its parameter expansion."""

from __future__ import annotations

import re
from string import Template

# REANA's image reference pattern (reana-commons), for the Dask image and step environments.
IMAGE_PATTERN = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?:\.[a-zA-Z0-9.-]+)+(?::[0-9]+)?/)?[a-zA-Z0-9._-]+"
    r"(?:/[a-zA-Z0-9._-]+)*(?::[a-zA-Z0-9._-]+)?(?:@sha256:[a-f0-9]{64})?$"
)
IMAGE_HINT = "use an image reference such as docker.io/library/python:3.12"
OTHER_ENGINES = ("cwl", "yadage", "snakemake")

# Known fields per level, from REANA's analysis schema and the serial engine's step options.
TOP_KEYS = ("version", "inputs", "workflow", "outputs", "tests", "workspace")
INPUTS_KEYS = ("files", "directories", "parameters", "options")
OUTPUTS_KEYS = ("files", "directories")
WORKFLOW_KEYS = ("type", "file", "specification", "resources")
RESOURCES_KEYS = ("dask", "kerberos", "voms_proxy", "cvmfs")
DASK_KEYS = ("image", "number_of_workers", "single_worker_memory", "single_worker_threads")
SPECIFICATION_KEYS = ("steps",)
STEP_KEYS = tuple(
    """name environment commands compute_backend kerberos voms_proxy rucio unpacked_img
    unpacked_image kubernetes_uid kubernetes_cpu_request kubernetes_cpu_limit
    kubernetes_memory_request kubernetes_memory_limit kubernetes_queue kubernetes_job_timeout
    htcondor_max_runtime htcondor_accounting_group htcondor_request_cpus htcondor_request_memory
    htcondor_request_disk htcondor_requirements slurm_partition slurm_time c4p_cpu_cores
    c4p_memory_limit c4p_additional_requirements""".split()  # noqa: SIM905 - reads as a table
)
STEP_KEYS_LISTED = (
    "name, environment, commands, and REANA's options such as kerberos, voms_proxy, "
    "compute_backend, kubernetes_*, htcondor_*, slurm_*"
)


def expand_parameters(command: str, parameters: dict[str, str]) -> tuple[str, list[str]]:
    """Substitute $name and ${name} from inputs.parameters, as REANA's serial engine does."""
    template = Template(command)
    messages: dict[str, None] = {}  # ordered and without repeats
    for match in template.pattern.finditer(command):
        name = match.group("named") or match.group("braced")
        if name and name not in parameters:
            message = (
                f"${name} is not in inputs.parameters and REANA fails on unknown parameters; "
                f"add it to inputs.parameters, or write $${name} to leave it to the shell"
            )
            messages[message] = None
        elif match.group("invalid") is not None:
            message = (
                "a '$' not followed by a parameter name makes REANA's parameter expansion "
                "fail; write $$ for a literal $"
            )
            messages[message] = None
    return template.safe_substitute(parameters), list(messages)


def parse_parameter(text: str) -> tuple[str, str]:
    """`-p NAME=VALUE`, as `reana-client start -p` takes it; ValueError says the form."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
        raise ValueError(f"{text!r} is not NAME=VALUE; write e.g. -p nevents=1000")
    return name.strip(), value


def override_parameters(document: object, given: dict[str, str]) -> list[str]:
    """Put `-p NAME=VALUE` over the document's inputs.parameters, keeping each one's YAML type
    (`-p nevents=1000` stays a number where the file wrote `nevents: 1000`: a CWL input or a
    Snakemake config value cares). A name the file does not declare is refused, where REANA
    drops it with a warning: a typo must not run the analysis with the old value."""
    import yaml

    if not given or not isinstance(document, dict):
        return []
    inputs = document.get("inputs")
    declared = inputs.get("parameters") if isinstance(inputs, dict) else None
    declared = declared if isinstance(declared, dict) else {}
    problems = []
    for name, value in given.items():
        if name not in declared:
            known = ", ".join(map(str, declared)) or "none"
            problems.append(
                f"{name}: not among inputs.parameters (declared: {known}); fix the name, "
                "or declare it in the reana.yaml"
            )
            continue
        old = declared[name]
        typed: object = value
        if isinstance(old, (bool, int, float)) and not isinstance(old, str):
            typed = yaml.safe_load(value) if value.strip() else value
            if type(typed) is not type(old) and not (
                isinstance(old, float) and isinstance(typed, int)
            ):
                kind = type(old).__name__
                problems.append(f"{name}: {value!r} is not a {kind}, as the reana.yaml's is")
                continue
        declared[name] = typed
    return problems
