"""The platform's choices for a Kubernetes run, from the command line, checked before anything
is rendered: a bad name is one line naming the option and the fix (exit 2)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import fields
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.kube.objects import (
    DASKSTEP_IMAGE,
    KubeOptions,
    daskstep_version,
    dns_label,
    is_dns_label,
)
from daskstep.record import new_run_id
from daskstep.workflow.reana import IMAGE_PATTERN

RUN_ID_MAX = 30  # the operator derives longer names from it: <id>-default-worker-<10 hex>


def options_from(args: argparse.Namespace, reana_yaml: str | None = None) -> KubeOptions:
    """The options given, checked. Without --run-id: for `render` (given `reana_yaml`) an id
    derived from it and the other options, so that the same input renders the same objects;
    for `run`, a new one."""
    problems = []
    given = {
        f.name: getattr(args, f.name) for f in fields(KubeOptions) if getattr(args, f.name, None)
    }
    if isinstance(given.get("tls"), str):  # the command line's on|off
        given["tls"] = given["tls"] == "on"
    if "run_id" not in given:
        given["run_id"] = new_run_id() if reana_yaml is None else derived_run_id(given, reana_yaml)
    if not is_dns_label(given["run_id"], RUN_ID_MAX):
        example = dns_label(given["run_id"], RUN_ID_MAX)
        problems.append(
            Problem(
                "--run-id",
                f"{given['run_id']!r} is not a Kubernetes name; use at most {RUN_ID_MAX} "
                f"lower-case letters, digits and '-', e.g. {example}",
            )
        )
    for option in ("namespace", "secrets_name", "workspace_claim", "ingress_namespace"):
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
    image = given.get("daskstep_image")
    if image is not None and not IMAGE_PATTERN.match(image):
        problems.append(
            Problem(
                "--daskstep-image",
                f"{image!r} is not a container image reference; give one such as "
                f"{DASKSTEP_IMAGE}:{daskstep_version()}",
            )
        )
    if problems:
        raise InputError(problems)
    return KubeOptions(**given)


def derived_run_id(given: dict[str, Any], reana_yaml: str) -> str:
    """ds-<10 hex digits> of the reana.yaml and every option but the root's uid (known only
    after a first apply, and rendered again with the same id) and the run id itself."""
    chosen = dataclasses.asdict(KubeOptions(**{**given, "run_id": "ds-0"}))
    for name in ("run_id", "root_uid"):
        chosen.pop(name)
    basis = json.dumps({"reana.yaml": reana_yaml, "options": chosen}, sort_keys=True)
    return "ds-" + hashlib.sha256(basis.encode()).hexdigest()[:10]
