"""The Kubernetes part of the `daskstep` command line: the placement options `run` and `render`
share, and `daskstep render`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from daskstep.kube.objects import DASKSTEP_IMAGE, TLS_SECRET_MODES, KubeOptions
from daskstep.progress import say

NEW_RUN_ID = "default: a new one, ds-<10 hex digits>"
DERIVED_RUN_ID = (
    "default: ds-<10 hex digits> derived from REANA_YAML and the other options, so the same "
    "input renders the same objects; give one for a second run of the same workflow"
)


def placement_options(p: argparse.ArgumentParser, run_id_help: str = NEW_RUN_ID) -> None:
    k = p.add_argument_group("kubernetes", "where and how a run is placed on Kubernetes")
    d = KubeOptions
    k.add_argument(
        "--namespace", metavar="NS", help=f"every object's namespace (default {d.namespace})"
    )
    k.add_argument("--run-id", metavar="ID", help=f"the run's name on every object ({run_id_help})")
    k.add_argument(
        "--daskstep-image",
        metavar="IMAGE",
        help="the image of the entrypoint installer and the sidecars (default "
        f"{DASKSTEP_IMAGE}:VERSION, VERSION being this daskstep's, see daskstep --version)",
    )
    k.add_argument(
        "--secrets-name",
        metavar="SECRET",
        help=f"REANA's per-user Secret, mounted as REANA does (default {d.secrets_name})",
    )
    k.add_argument(
        "--workspace-claim",
        metavar="PVC",
        help=f"the ReadWriteMany claim holding the workspace (default {d.workspace_claim})",
    )
    k.add_argument(
        "--workspace-subpath",
        metavar="PATH",
        help="the run's folder in the claim (default: the claim's root)",
    )
    k.add_argument(
        "--dashboard-host",
        metavar="HOST",
        help="an Ingress for the dashboard on HOST, behind basic auth (default: none)",
    )
    k.add_argument(
        "--ingress-namespace",
        metavar="NS",
        help="with --dashboard-host: the ingress controller's namespace, the only one let "
        f"through to the dashboard's port (default {d.ingress_namespace})",
    )


def add_render(sub: Any) -> None:
    p = sub.add_parser(
        "render", help="print a run's Kubernetes objects as YAML (no cluster needed)"
    )
    p.add_argument("reana_yaml", metavar="REANA_YAML")
    p.add_argument(
        "--backend",
        choices=("kubernetes",),
        default="kubernetes",
        help="the backend whose objects to print (default kubernetes, the only one)",
    )
    p.add_argument(
        "--limits",
        metavar="FILE",
        help="YAML file overriding the platform limits (default: REANA's)",
    )
    placement_options(p, DERIVED_RUN_ID)
    p.add_argument(
        "--adapt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the operator's DaskAutoscaler, from 0 to number_of_workers, with the scheduler's "
        "HTTP API on so that workers are retired, not deleted (default: the limits file's "
        "autoscaler, else on, as REANA's)",
    )
    p.add_argument(
        "--root-uid",
        metavar="UID",
        help="the root ConfigMap's uid, for the ownerReferences (default: none; the output "
        "says how to get it)",
    )
    p.add_argument(
        "--tls",
        choices=("on", "off"),
        default="on",
        help="the run's own CA and certificates (default on; off: plain TCP, anyone who "
        "reaches the scheduler can submit code)",
    )
    p.add_argument(
        "--tls-secret",
        choices=TLS_SECRET_MODES,
        default="external",
        help="external: the pods mount the Secret <run>-tls, which is not in the output (no "
        "private key in YAML that goes to git; stderr says how to create it); inline: the "
        "Secret, keys and all, is in the output (default external)",
    )
    p.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="the run's CA and certificates: read from DIR, or made there if it has none "
        "(0700, keys 0600), for kubectl create secret --from-file=DIR, or inlined the same "
        "each time (default: none; inline makes new keys each time)",
    )


def cmd_render(args: argparse.Namespace) -> int:
    from daskstep.cli_parts import load as _load
    from daskstep.errors import InputError, Problem
    from daskstep.extras import require_extra
    from daskstep.kube import tls
    from daskstep.kube.options import options_from
    from daskstep.kube.render import dump, render

    require_extra("kubernetes", "render", "rendering a run's Kubernetes objects")
    workflow = _load(args.reana_yaml, args.limits)
    if workflow.type != "serial":  # the engine runs on the local backend only, for now
        message = f"kubernetes cannot run {workflow.type} workflows yet; use daskstep run"
        raise InputError([Problem("--backend", message)], source=args.reana_yaml)
    reana_yaml = Path(args.reana_yaml).read_text()
    options = options_from(args, reana_yaml)
    if workflow.dask is not None:  # --adapt, else the platform's switch, else REANA's default
        adapt = next(on for on in (args.adapt, workflow.dask.autoscaler, True) if on is not None)
        options = dataclasses.replace(options, adapt=adapt)
    files = None
    if args.tls_dir and not (options.tls and workflow.dask is not None):
        say("warning: --tls-dir is not used: the run has no cluster, or --tls off")
    elif args.tls_dir:
        files, made = tls.files_from(Path(args.tls_dir), options.run_id)
        if made:
            say(f"made the run's CA and certificates in {args.tls_dir} (keys 0600): keep them "
                "out of git")  # fmt: skip
    objects = render(workflow, reana_yaml, options, files)
    sys.stdout.write(dump(objects, options))
    if tls.mounted(objects, options):
        _say_how_to_make_the_secret(options, args.tls_dir)
    return 0


def _say_how_to_make_the_secret(options: KubeOptions, folder: str | None) -> None:
    from daskstep.kube import tls

    name = tls.secret_name(options)
    if options.tls_secret == "inline":
        if folder is None:
            say(f"warning: the Secret {name} in this output holds new private keys on every "
                "render; give --tls-dir DIR to render the same ones again")  # fmt: skip
        return
    create = f"kubectl create secret generic {name} -n {options.namespace} --from-file="
    if folder:
        say(f"the pods mount the Secret {name}, not in this output; create it: {create}{folder}")
    else:
        say(f"the pods mount the Secret {name}, not in this output (it holds private keys); "
            "render with --tls-dir DIR to make its files, then create it: "
            f"{create}DIR")  # fmt: skip
