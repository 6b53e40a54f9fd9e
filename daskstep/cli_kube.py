"""The Kubernetes part of the `daskstep` command line: the placement options `run` and `render`
share, and `daskstep render`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any


def placement_options(p: argparse.ArgumentParser) -> None:
    k = p.add_argument_group("kubernetes", "where and how a run is placed on Kubernetes")
    k.add_argument("--namespace", default="default")
    k.add_argument("--run-id", metavar="ID", help="default: a new one (ds-<10 hex digits>)")
    k.add_argument("--daskstep-image", metavar="IMAGE", help="entrypoint and sidecars' image")
    k.add_argument("--secrets-name", metavar="SECRET", help="REANA's per-user Secret")
    k.add_argument("--workspace-claim", metavar="PVC", help="the ReadWriteMany workspace claim")
    k.add_argument("--workspace-subpath", metavar="PATH", help="the run's folder in the claim")
    k.add_argument("--dashboard-host", metavar="HOST", help="an Ingress for the dashboard")


def add_render(sub: Any) -> None:
    p = sub.add_parser(
        "render", help="print a run's Kubernetes objects as YAML (no cluster needed)"
    )
    p.add_argument("reana_yaml", metavar="REANA_YAML")
    p.add_argument("--backend", choices=("kubernetes",), default="kubernetes")
    p.add_argument("--limits", metavar="FILE", help="YAML file overriding the platform limits")
    placement_options(p)
    p.add_argument("--root-uid", metavar="UID", help="the root ConfigMap's uid: owner references")
    p.add_argument(
        "--tls",
        choices=("on", "off"),
        default="on",
        help="the run's CA and certificates as a Secret (default on; its keys are in the output)",
    )


def cmd_render(args: argparse.Namespace) -> int:
    from daskstep.cli import _load
    from daskstep.errors import InputError, Problem
    from daskstep.kube.options import options_from
    from daskstep.kube.render import dump, render

    workflow = _load(args.reana_yaml, args.limits)
    if workflow.type != "serial":  # the engine runs on the local backend only, for now
        message = f"kubernetes cannot run {workflow.type} workflows yet; use daskstep run"
        raise InputError([Problem("--backend", message)], source=args.reana_yaml)
    options = dataclasses.replace(options_from(args), tls=args.tls == "on")
    reana_yaml = Path(args.reana_yaml).read_text()
    sys.stdout.write(dump(render(workflow, reana_yaml, options), options))
    return 0
