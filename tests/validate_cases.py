"""The table of reana.yaml documents for test_validate: each rule, valid and invalid."""

from __future__ import annotations

import copy
from typing import Any

IMAGE = "docker.io/coffeateam/coffea-dask-cc7:0.7.22-py3.10-g7f049"
DASK = "workflow.resources.dask"
STEP0 = "workflow.specification.steps[0]"
DELETE = object()

BASE: dict[str, Any] = {
    "version": "0.9.3",
    "inputs": {"files": ["analysis.py"], "directories": ["data"], "parameters": {"n": 3}},
    "workflow": {
        "type": "serial",
        "resources": {
            "dask": {
                "image": IMAGE,
                "number_of_workers": 2,
                "single_worker_memory": "4Gi",
                "single_worker_threads": 2,
            }
        },
        "specification": {
            "steps": [
                {"name": "process", "environment": IMAGE, "commands": ["python analysis.py -n $n"]}
            ]
        },
    },
    "outputs": {"files": ["results/plot.png"], "directories": ["results"]},
}


def spec(**changes: Any) -> dict[str, Any]:
    """BASE with dotted paths set (or deleted); `steps.0` indexes lists; `__` stands for a dot."""
    document = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split("__")]
        node = document
        for key in keys[:-1]:
            node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return document


W = "workflow"
RES = "workflow__resources"
DSK = "workflow__resources__dask"
ST0 = "workflow__specification__steps__0"

# (id, document, error paths, warning paths, fragments that must appear in the messages)
CASES: list[tuple[str, Any, set[str], set[str], tuple[str, ...]]] = [
    ("valid-full", spec(), set(), set(), ()),
    ("valid-no-dask", spec(**{f"{RES}__dask": DELETE}), set(), set(), ()),
    ("valid-no-resources", spec(**{f"{W}__resources": DELETE}), set(), set(), ()),
    ("valid-dask-image-only", spec(**{DSK: {"image": "python:3.12"}}), set(), set(), ()),
    (
        "valid-credentials",
        spec(**{f"{RES}__kerberos": True, f"{RES}__voms_proxy": True, f"{RES}__cvmfs": ["cms"]}),
        set(),
        set(),
        (),
    ),
    (
        "valid-reana-step-options",
        spec(**{f"{ST0}__compute_backend": "kubernetes", f"{ST0}__kubernetes_memory_limit": "1Gi"}),
        set(),
        set(),
        (),
    ),
    (
        "valid-at-the-limits",
        spec(**{DSK: {"image": IMAGE, "number_of_workers": 2, "single_worker_memory": "8Gi"}}),
        set(),
        set(),
        (),
    ),
    ("missing-workflow", spec(workflow=DELETE), {"workflow"}, set(), ("type: serial",)),
    ("workflow-not-mapping", spec(workflow=["serial"]), {"workflow"}, set(), ("a list",)),
    ("type-missing", spec(**{f"{W}__type": DELETE}), {"workflow.type"}, set(), ("serial",)),
    (
        "type-cwl",
        spec(**{f"{W}__type": "cwl"}),
        {"workflow.file"},
        {"workflow.specification"},
        ("needs file:",),
    ),
    ("type-yadage", spec(**{f"{W}__type": "yadage"}), {"workflow.type"}, set(), ("serial",)),
    ("type-number", spec(**{f"{W}__type": 3}), {"workflow.type"}, set(), ("type: serial",)),
    (
        "specification-missing",
        spec(**{f"{W}__specification": DELETE}),
        {"workflow.specification"},
        set(),
        ("steps",),
    ),
    (
        "workflow-file-instead",
        spec(**{f"{W}__specification": DELETE, f"{W}__file": "steps.yaml"}),
        {"workflow.file"},
        set(),
        ("workflow.specification.steps",),
    ),
    (
        "steps-missing",
        spec(**{f"{W}__specification": {}}),
        {"workflow.specification.steps"},
        set(),
        ("at least one step",),
    ),
    (
        "steps-empty",
        spec(**{f"{W}__specification__steps": []}),
        {"workflow.specification.steps"},
        set(),
        ("empty",),
    ),
    (
        "steps-not-list",
        spec(**{f"{W}__specification__steps": {"commands": ["x"]}}),
        {"workflow.specification.steps"},
        set(),
        ("a list",),
    ),
    ("step-not-mapping", spec(**{ST0: "echo hi"}), {STEP0}, set(), ("commands",)),
    (
        "commands-missing",
        spec(**{f"{ST0}__commands": DELETE}),
        {f"{STEP0}.commands"},
        set(),
        ("add commands",),
    ),
    ("commands-empty", spec(**{f"{ST0}__commands": []}), {f"{STEP0}.commands"}, set(), ("empty",)),
    (
        "commands-string",
        spec(**{f"{ST0}__commands": "python analysis.py"}),
        {f"{STEP0}.commands"},
        set(),
        ("not a list",),
    ),
    (
        "command-empty-string",
        spec(**{f"{ST0}__commands": ["echo", "  "]}),
        {f"{STEP0}.commands[1]"},
        set(),
        ("empty",),
    ),
    (
        "command-not-string",
        spec(**{f"{ST0}__commands": [42, {"echo a": "b"}]}),
        {f"{STEP0}.commands[0]", f"{STEP0}.commands[1]"},
        set(),
        ("quote",),
    ),
    ("name-not-string", spec(**{f"{ST0}__name": 7}), {f"{STEP0}.name"}, set(), ("string",)),
    (
        "environment-bad-image",
        spec(**{f"{ST0}__environment": "my image:latest"}),
        {f"{STEP0}.environment"},
        set(),
        ("not a container image",),
    ),
    ("resources-not-mapping", spec(**{RES: ["dask"]}), {"workflow.resources"}, set(), ("mapping",)),
    (
        "kerberos-not-bool",
        spec(**{f"{RES}__kerberos": "true"}),
        {"workflow.resources.kerberos"},
        set(),
        ("true or false",),
    ),
    (
        "voms-not-bool",
        spec(**{f"{RES}__voms_proxy": 1}),
        {"workflow.resources.voms_proxy"},
        set(),
        ("true or false",),
    ),
    ("dask-null", spec(**{DSK: None}), {DASK}, set(), ("image",)),
    ("dask-image-missing", spec(**{f"{DSK}__image": DELETE}), {f"{DASK}.image"}, set(), ("add",)),
    (
        "dask-image-bad",
        spec(**{f"{DSK}__image": "Not An Image!"}),
        {f"{DASK}.image"},
        set(),
        ("not a container image",),
    ),
    (
        "workers-above-max",
        spec(**{f"{DSK}__number_of_workers": 30, f"{DSK}__single_worker_memory": "512Mi"}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("30 is above the platform maximum of 20 (max_number_of_workers)", "at most 20"),
    ),
    (
        "workers-zero",
        spec(**{f"{DSK}__number_of_workers": 0}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("at least 1",),
    ),
    (
        "workers-negative",
        spec(**{f"{DSK}__number_of_workers": -3}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("at least 1",),
    ),
    (
        "workers-bool",
        spec(**{f"{DSK}__number_of_workers": True}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("a boolean",),
    ),
    (
        "workers-quoted",
        spec(**{f"{DSK}__number_of_workers": "4"}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("without quotes",),
    ),
    (
        "workers-float",
        spec(**{f"{DSK}__number_of_workers": 2.5}),
        {f"{DASK}.number_of_workers"},
        set(),
        ("whole number",),
    ),
    (
        "memory-not-a-size",
        spec(**{f"{DSK}__single_worker_memory": "8GB"}),
        {f"{DASK}.single_worker_memory"},
        set(),
        ("'8GB' is not a memory size", "2Gi"),
    ),
    (
        "memory-plain-number",
        spec(**{f"{DSK}__single_worker_memory": 2048}),
        {f"{DASK}.single_worker_memory"},
        set(),
        ("not a memory size",),
    ),
    (
        "memory-leading-zero",
        spec(**{f"{DSK}__single_worker_memory": "02Gi"}),
        {f"{DASK}.single_worker_memory"},
        set(),
        ("not a memory size",),
    ),
    (
        "memory-above-max",
        spec(**{f"{DSK}__single_worker_memory": "12Gi", f"{DSK}__number_of_workers": 1}),
        {f"{DASK}.single_worker_memory"},
        set(),
        ("8Gi (max_single_worker_memory)",),
    ),
    (
        "threads-above-max",
        spec(**{f"{DSK}__single_worker_threads": 9}),
        {f"{DASK}.single_worker_threads"},
        set(),
        ("maximum of 8 (max_single_worker_threads)",),
    ),
    (
        "threads-zero",
        spec(**{f"{DSK}__single_worker_threads": 0}),
        {f"{DASK}.single_worker_threads"},
        set(),
        ("at least 1 thread",),
    ),
    (
        "threads-bool",
        spec(**{f"{DSK}__single_worker_threads": False}),
        {f"{DASK}.single_worker_threads"},
        set(),
        ("a boolean",),
    ),
    (
        "total-memory-above-max",
        spec(**{f"{DSK}__number_of_workers": 5, f"{DSK}__single_worker_memory": "8Gi"}),
        {DASK},
        set(),
        ("5 workers x 8Gi = 40Gi", "16Gi (max_memory_limit)", "at most 2 workers"),
    ),
    (
        "total-memory-from-default-workers",
        spec(**{f"{DSK}__number_of_workers": DELETE, f"{DSK}__single_worker_memory": "7Gi"}),
        set(),
        set(),
        (),
    ),
    ("unknown-top-level", spec(extra=1), set(), {"extra"}, ("unknown field",)),
    ("unknown-in-workflow", spec(**{f"{W}__engine": "x"}), set(), {"workflow.engine"}, ()),
    (
        "unknown-in-resources",
        spec(**{f"{RES}__gpus": 1}),
        set(),
        {"workflow.resources.gpus"},
        ("known fields here: dask",),
    ),
    (
        "unknown-in-dask-with-suggestion",
        spec(**{f"{DSK}__number_of_worker": 3}),
        set(),
        {f"{DASK}.number_of_worker"},
        ("did you mean number_of_workers?",),
    ),
    ("unknown-in-step", spec(**{f"{ST0}__gpu": True}), set(), {f"{STEP0}.gpu"}, ("kerberos",)),
    (
        "unknown-in-step-suggestion",
        spec(**{f"{ST0}__enviroment": IMAGE}),
        set(),
        {f"{STEP0}.enviroment"},
        ("did you mean environment?",),
    ),
    (
        "unknown-parameter-warns",
        spec(**{f"{ST0}__commands": ["echo $HOME"]}),
        set(),
        {f"{STEP0}.commands[0]"},
        ("$$HOME",),
    ),
    (
        "duplicate-step-names-warn",
        spec(**{"workflow__specification__steps": [{"name": "a", "commands": ["x"]}] * 2}),
        set(),
        {"workflow.specification.steps[1].name"},
        ("steps[0]",),
    ),
    (
        "inputs-files-not-list",
        spec(**{"inputs__files": "analysis.py"}),
        {"inputs.files"},
        set(),
        ("a list",),
    ),
    (
        "inputs-directories-bad-item",
        spec(**{"inputs__directories": ["data", None]}),
        {"inputs.directories[1]"},
        set(),
        ("null",),
    ),
    (
        "outputs-items-bad",
        spec(**{"outputs__files": [1], "outputs__directories": [""]}),
        {"outputs.files[0]", "outputs.directories[0]"},
        set(),
        (),
    ),
    (
        "parameters-not-mapping",
        spec(**{"inputs__parameters": ["n"]}),
        {"inputs.parameters"},
        {f"{STEP0}.commands[0]"},  # $n is then unknown
        (),
    ),
    (
        "all-problems-reported",
        spec(
            **{
                f"{DSK}__number_of_workers": 0,
                f"{DSK}__single_worker_memory": "lots",
                f"{DSK}__single_worker_threads": 100,
                f"{ST0}__commands": [],
                "inputs__files": [3],
                "bogus": True,
            }
        ),
        {
            f"{DASK}.number_of_workers",
            f"{DASK}.single_worker_memory",
            f"{DASK}.single_worker_threads",
            f"{STEP0}.commands",
            "inputs.files[0]",
        },
        {"bogus"},
        (),
    ),
    ("top-level-list", [BASE], {""}, set(), ("not a mapping",)),
    ("top-level-empty", None, {""}, set(), ("empty",)),
    ("top-level-string", "workflow", {""}, set(), ("a string",)),
]
