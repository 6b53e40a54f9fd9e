"""A batch site's settings: where worker jobs go and how they start. They belong to the
platform, not to the analysis, so they come from `daskstep run --site FILE` (a YAML file, read
as `--limits` is) and, for anything the file leaves out, from dask-jobqueue's own configuration
(`jobqueue.slurm.*`, `jobqueue.htcondor.*`: its YAML files or DASK_JOBQUEUE__... variables),
which the job classes read themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.workflow.limits import key_name, kind, read_yaml, show, switch_problem

# key: (what it is, an example) for the one-line messages
TEXT_KEYS = {
    "partition": "Slurm partition, e.g. partition: short",
    "account": "Slurm account, e.g. account: atlas",
    "qos": "Slurm QoS, e.g. qos: normal",
    "walltime": "Slurm time limit, e.g. walltime: '02:00:00'",
    "accounting_group": "HTCondor accounting group, e.g. accounting_group: group_u_ATLAS.user",
    "requirements": 'HTCondor requirements, e.g. requirements: OpSysAndVer == "AlmaLinux9"',
    "python": "the workers' Python on the batch nodes, e.g. python: /cvmfs/sw/bin/python3",
    "scheduler_host": "the address workers reach the scheduler at, e.g. scheduler_host: 10.0.0.5",
    "interface": "the network interface the scheduler listens on, e.g. interface: ib0",
    "shared_directory": "a folder the controller and batch nodes both see, e.g. /scratch/runs",
}
LIST_KEYS = {
    "extra_directives": "extra #SBATCH lines or submit description lines, e.g. ['--exclusive']",
    "prologue": "shell lines run before the worker, e.g. ['module load python']",
}
NUMBER_KEYS = {
    "death_timeout": "seconds a worker outlives an unreachable scheduler, e.g. death_timeout: 60",
    "disk": "HTCondor disk per worker job in MiB, e.g. disk: 1024",
}
SWITCH_KEYS = ("autoscaler",)  # as in the limits file; over it for this site
KNOWN = (*TEXT_KEYS, *LIST_KEYS, *NUMBER_KEYS, *SWITCH_KEYS)
WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}\Z")


@dataclass(frozen=True)
class Site:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    walltime: str | None = None
    accounting_group: str | None = None
    requirements: str | None = None
    python: str | None = None
    scheduler_host: str | None = None
    interface: str | None = None  # as dask-jobqueue's: the scheduler on this one's address
    shared_directory: str | None = None
    extra_directives: tuple[str, ...] = ()
    prologue: tuple[str, ...] = ()
    death_timeout: int = 60
    disk: int = 1024
    autoscaler: bool | None = None  # the workers follow the work; None: the limits' say
    source: str = field(default="", compare=False)


def load_site(path: str | Path | None) -> Site:
    """The site file's settings; every problem is one line naming the key, exit 2."""
    if path is None:
        return Site()
    source = str(path)
    document, problems = read_yaml(path)
    if problems:
        raise InputError(problems, source=source)
    if document is None:
        return Site(source=source)
    if not isinstance(document, dict):
        message = (
            f"the top level is {kind(document)}, not a mapping; "
            "write one key per line, e.g. partition: short"
        )
        raise InputError([Problem("", message)], source=source)
    values: dict[str, Any] = {}
    for key, value in document.items():
        name = str(key)
        if name not in KNOWN:
            message = f"unknown site setting; use one of {', '.join(KNOWN)}"
            problems.append(Problem(key_name(key), message))
        elif value is None:
            continue
        elif name in TEXT_KEYS:
            if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
                problems.append(
                    Problem(name, f"expected text, got {show(value)}; {TEXT_KEYS[name]}")
                )
            else:
                values[name] = str(value)
        elif name in SWITCH_KEYS:
            if isinstance(value, bool):
                values[name] = value
            else:
                problems.append(switch_problem(name, value))
        elif name in LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(
                    Problem(name, f"expected a list of text, got {show(value)}; {LIST_KEYS[name]}")
                )
            else:
                values[name] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(
                Problem(
                    name,
                    f"expected a whole number of at least 1, got {show(value)}; "
                    f"{NUMBER_KEYS[name]}",
                )
            )
        else:
            values[name] = value
    walltime = values.get("walltime")
    if walltime is not None and not WALLTIME.match(walltime):
        problems.append(
            Problem("walltime", f"{show(walltime)} is not a Slurm time; {TEXT_KEYS['walltime']}")
        )
    shared = values.get("shared_directory")
    if shared is not None and not Path(shared).is_dir():
        problems.append(
            Problem(
                "shared_directory", f"{show(shared)} is not a folder; create it, or give another"
            )
        )
    if problems:
        raise InputError(problems, source=source)
    return Site(**values, source=source)
