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
