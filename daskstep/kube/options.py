"""The platform's choices for a Kubernetes run, from the command line, checked before anything
is rendered: a bad name is one line naming the option and the fix (exit 2)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from daskstep.containers import new_run_id
from daskstep.errors import InputError, Problem
from daskstep.kube.objects import KubeOptions, dns_label, is_dns_label

RUN_ID_MAX = 30  # the operator derives longer names from it: <id>-default-worker-<10 hex>


def options_from(args: argparse.Namespace) -> KubeOptions:
    problems = []
    given = {
        f.name: getattr(args, f.name) for f in fields(KubeOptions) if getattr(args, f.name, None)
    }
    given.setdefault("run_id", new_run_id())
    if not is_dns_label(given["run_id"], RUN_ID_MAX):
        example = dns_label(given["run_id"], RUN_ID_MAX)
        problems.append(
            Problem(
                "--run-id",
                f"{given['run_id']!r} is not a Kubernetes name; use at most {RUN_ID_MAX} "
                f"lower-case letters, digits and '-', e.g. {example}",
            )
        )
    for option in ("namespace", "secrets_name", "workspace_claim"):
        value = given.get(option)
        if value is not None and not is_dns_label(value):
            flag = "--" + option.replace("_", "-")
            problems.append(
                Problem(
                    flag,
                    f"{value!r} is not a Kubernetes name; use lower-case letters, "
                    "digits and '-' (at most 63)",
                )
            )
    subpath = given.get("workspace_subpath", "")
    if subpath.startswith("/") or ".." in subpath.split("/"):
        problems.append(
            Problem("--workspace-subpath", f"{subpath!r} must be a relative path inside the claim")
        )
    if problems:
        raise InputError(problems)
    return KubeOptions(**given)
