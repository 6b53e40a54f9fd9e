"""The `daskstep` command: argument parsing, wiring, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from daskstep.backends.registry import kind_of
from daskstep.backends.registry import names as backend_names
from daskstep.cli_kube import add_render, cmd_render, placement_options
from daskstep.cli_parts import Parser as _Parser
from daskstep.cli_parts import load as _load
from daskstep.cli_passthrough import passthrough
from daskstep.cli_runs import add_run_readers, cmd_list, cmd_logs, cmd_prune, cmd_status, run_option
from daskstep.errors import DaskstepError, InputError, Problem
from daskstep.leftovers import gc as collect
from daskstep.record import RunFolder, Workspace
from daskstep.serve.cli import add_parser as add_serve_parser
from daskstep.serve.cli import cmd_serve
from daskstep.terminal import quiet
from daskstep.ui.cli import add_parser as add_ui_parser
from daskstep.ui.cli import cmd_ui


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. 300") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"{text} is not a positive number of seconds; write e.g. 300"
        )
    return value


def _parameter(text: str) -> tuple[str, str]:
    from daskstep.workflow.reana import parse_parameter

    try:
        return parse_parameter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Version(argparse.Action):
    """--version, looked up only when asked for: not on every command's start."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("daskstep")
        except PackageNotFoundError:
            ours = "unknown"
        python = ".".join(map(str, sys.version_info[:3]))
        print(f"daskstep {ours} (distributed {version('distributed')}, Python {python})")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="daskstep", description="Run Dask clusters inside REANA workflows.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a reana.yaml against the platform limits")
    p.add_argument("reana_yaml", metavar="REANA_YAML")
    p.add_argument("--limits", metavar="FILE", help="YAML file overriding the platform limits")

    p = sub.add_parser("run", help="start the cluster, run the steps, tear the cluster down")
    p.add_argument("reana_yaml", metavar="REANA_YAML")
    p.add_argument("--backend", choices=backend_names(), default="local")
    p.add_argument("--workspace", metavar="DIR", help="default: the folder holding REANA_YAML")
    p.add_argument("--limits", metavar="FILE", help="YAML file overriding the platform limits")
    p.add_argument(
        "--start-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=300.0,
        help="how long to wait for all workers (default 300)",
    )
    p.add_argument(
        "--secrets",
        metavar="DIR",
        help="REANA-named secrets for kerberos/voms_proxy (default: $DASKSTEP_SECRETS, "
        "else /etc/reana/secrets)",
    )

    p.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help="docker: run steps whose Dask differs from the cluster image's (the entrypoint warns)",
    )
    p.add_argument(
        "--site",
        metavar="FILE",
        help="slurm/htcondor: the batch site's settings (partition, account, qos, walltime, "
        "python, ...); dask-jobqueue's own config fills in the rest",
    )
    p.add_argument(
        "--tls",
        choices=("on", "off"),
        default="on",
        help="the run's own CA and certificates: the scheduler takes only the run's processes "
        "(default on; off: plain TCP, anyone who reaches the port can submit code)",
    )
    p.add_argument(
        "--test",
        action="store_true",
        help="then run the reana.yaml's tests.files (Gherkin) against the run (daskstep test)",
    )
    p.add_argument(
        "--junit", metavar="FILE", help="with --test: default .daskstep/runs/N/tests.xml"
    )
    p.add_argument(
        "-p",
        "--parameter",
        metavar="NAME=VALUE",
        type=_parameter,
        action="append",
        default=[],
        help="over inputs.parameters, as reana-client start -p (repeatable)",
    )
    p.add_argument(
        "--adapt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the workers follow the work: from 1 (local, docker; 0 on slurm, htcondor and "
        "kubernetes) up to number_of_workers, retired through the scheduler when idle "
        "(default: the site or limits file's autoscaler, else on for kubernetes only)",
    )
    placement_options(p)

    p = sub.add_parser("test", help="run the reana.yaml's workflow tests against the last run")
    p.add_argument(
        "reana_yaml",
        metavar="REANA_YAML",
        nargs="?",
        help="default: WORKSPACE/reana.yaml, else the one the last run names",
    )
    p.add_argument("--workspace", metavar="DIR", help="default: REANA_YAML's folder, else .")
    run_option(p)
    p.add_argument("--junit", metavar="FILE", help="the JUnit XML (default: in the run's folder)")
    p.add_argument("--limits", metavar="FILE", help="YAML file overriding the platform limits")
    p.add_argument("--steps", action="store_true", help="list the steps feature files may use")

    add_render(sub)

    p = sub.add_parser("wait-step", help="wait for a step's status file; fail if the step did")
    p.add_argument("status_file", metavar="STATUS_FILE")
    p.add_argument(
        "--timeout", metavar="SECONDS", type=_seconds, help="how long to wait (default: no limit)"
    )

    p = sub.add_parser("gc", help="remove what runs whose daskstep run is gone left behind")
    p.add_argument("--all", action="store_true", help="every daskstep run's, live ones too")
    p.add_argument(
        "--backend",
        choices=backend_names(),
        default="docker",
        help="whose leftovers: containers, or batch jobs (default docker)",
    )

    add_run_readers(sub)
    add_ui_parser(sub)
    add_serve_parser(sub)

    p = sub.add_parser("sidecar", help="run a sidecar: logs, kerberos or voms")
    kinds = p.add_subparsers(dest="sidecar", required=True, metavar="KIND")
    q = kinds.add_parser("logs", help="ship log files into the workspace's log store")
    q.add_argument("--workspace", metavar="DIR", required=True)
    q.add_argument(
        "--source",
        metavar="SOURCE",
        action="append",
        required=True,
        help="what to ship (repeatable): COMPONENT=GLOB for job, scheduler, worker or engine "
        "files; "
        "docker:LABEL=VALUE[,LABEL=VALUE...] for the containers with those labels (their "
        "daskstep.component label names the stream); kubernetes:NAMESPACE/SELECTOR for the "
        "pods a label selector matches (the operator's dask.org/component label names the "
        "scheduler and workers, other pods are the job)",
    )
    q.add_argument("--store", metavar="DIR", help="the store (default: WORKSPACE/.daskstep/logs)")
    q.add_argument("--checkpoints", metavar="FILE", help="default: beside the store")
    q.add_argument(
        "--stop-on-eof",
        action="store_true",
        help="also drain and stop when stdin closes (daskstep run holds it open)",
    )
    for kind, what in (
        ("kerberos", "keep a Kerberos ticket cache valid"),
        ("voms", "keep a VOMS proxy valid"),
        ("reaper", "remove a run's containers once its controller is gone"),
    ):
        q = kinds.add_parser(kind, help=what, add_help=False)
        q.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("images", help="build and inspect per-analysis Dask images")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    q = verbs.add_parser("build", help="build a Dask image from images/Dockerfile")
    q.add_argument("--dask", required=True, metavar="VERSION", help="dask and distributed version")
    q.add_argument("--tag", required=True, metavar="TAG")
    q.add_argument("--base", metavar="IMAGE", help="base image (default: python:PYTHON-slim)")
    q.add_argument("--python", metavar="X.Y", help="the base's Python (default: asked of it)")
    q.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="SPEC",
        help="another package for the image, e.g. numpy==1.26.4 (repeatable)",
    )
    q = verbs.add_parser("build-daskstep", help="build the daskstep image (top-level Dockerfile)")
    q.add_argument("--tag", required=True, metavar="TAG")
    q.add_argument("--base", metavar="IMAGE", help="base image with Python >= 3.10")
    q = verbs.add_parser("inspect", help="the Python, Dask and serialisation versions of an image")
    q.add_argument("image", metavar="IMAGE")
    q.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("pack-entrypoint", help="write the entrypoint as one zipapp file")
    p.add_argument("--output", metavar="PATH", default="daskstep-entrypoint.pyz")

    p = sub.add_parser(
        "entrypoint",
        help="the step wrapper, run in-process; entrypoint install DIR copies it into DIR",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    from daskstep.words import plural
    from daskstep.workflow.inputs import check_inputs

    workflow = _load(args.reana_yaml, args.limits)
    check_inputs(workflow)  # what run's input stage finds missing on disk, found here too
    if workflow.dask is None:
        cluster = "no Dask cluster"
    else:
        d = workflow.dask
        cluster = (
            f"{plural(d.number_of_workers, 'worker')} × {d.single_worker_memory}, "
            f"{plural(d.single_worker_threads, 'thread')} each"
        )
    print(f"{args.reana_yaml}: valid ({cluster}; {plural(len(workflow.steps), 'step')})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from daskstep.wiring import prepare_run

    workflow = _load(args.reana_yaml, args.limits, dict(args.parameter))
    workspace = Path(args.workspace) if args.workspace else Path(args.reana_yaml).parent
    features = None
    if args.test:  # a mistake in a feature file is bad input: found before anything starts
        from daskstep.workflow_tests import load_features

        features = load_features(workflow)
    run = prepare_run(
        workflow,
        backend=args.backend,
        workspace=workspace,
        start_timeout=args.start_timeout,
        secrets=args.secrets,
        allow_version_mismatch=args.allow_version_mismatch,
        own=kind_of(args.backend).options_from(args),
        site=args.site,
        tls=args.tls == "on",
        adapt=args.adapt,
    )
    from daskstep.terminal import forgiving_streams

    with forgiving_streams():  # `| tee run.log` and a Ctrl-C that ends tee too
        return _tested(run.execute(), features, workflow, run.record, args.junit)


def _tested(
    code: int, features: list | None, workflow: object, record: Any, junit: str | None
) -> int:
    """`run --test`: the tests after the workflow; a failed workflow keeps its own exit code,
    a cancelled one is not tested."""
    if features is None or code in (130, 143):
        return code
    from daskstep.workflow_tests import check_run

    tested = check_run(features, workflow, record, Path(junit) if junit else None)
    return code or tested


def _cmd_test(args: argparse.Namespace) -> int:
    from daskstep.workflow_tests import check_run, find_reana_yaml, load_features
    from daskstep.workflow_tests.step_definitions import listing

    if args.steps:
        print("\n".join(listing()))
        return 0
    if args.workspace:
        workspace = Path(args.workspace)
    else:
        workspace = Path(args.reana_yaml).parent if args.reana_yaml else Path(".")
    if args.reana_yaml:  # its mistakes first: they are the same whichever run is judged
        workflow = _load(args.reana_yaml, args.limits)
        features = load_features(workflow)
        record = Workspace(workspace).find(args.run)
    else:
        record = Workspace(workspace).find(args.run)
        workflow = _load(str(find_reana_yaml(record)), args.limits)
        features = load_features(workflow)
    return check_run(features, workflow, record, Path(args.junit) if args.junit else None)


def _cmd_wait_step(args: argparse.Namespace) -> int:
    from daskstep.wait_step import wait_step

    return wait_step(Path(args.status_file), args.timeout)


def _cmd_sidecar(args: argparse.Namespace) -> int:
    from sidecar.logs import main as logs_main
    from sidecar.logs import parse_source

    for spec in args.source:
        try:
            parse_source(spec)
        except ValueError as e:
            raise InputError([Problem("--source", str(e))]) from None
    checkpoints = Path(args.checkpoints) if args.checkpoints else None
    store = Path(args.store) if args.store else RunFolder.plain(args.workspace).logs
    return logs_main(store, args.source, checkpoints, args.stop_on_eof)


def _cmd_images(args: argparse.Namespace) -> int:
    from daskstep.docker import images

    if args.verb == "build-daskstep":
        from daskstep.docker.daskstep_image import build_daskstep

        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        print(build_daskstep(args.tag, args.base, log=log)["version"])
        return 0
    if args.verb == "build":
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        found = images.build(
            args.dask, args.tag, args.base, args.python, tuple(args.package), log=log
        )
        image = args.tag
    else:
        image = args.image
        found = images.inspect(images.docker_client(), image)
    if getattr(args, "json", False):
        print(json.dumps({"image": image, **found}))
        return 0
    rows = [("image", image)]
    rows += [(k, found.get(k) or "-") for k in ("python", *images.PACKAGES)]
    rows.append(("dask CLI", "yes" if found.get("dask_cli") else "no"))
    for key, value in rows:
        print(f"{key:12} {value}")
    return 0


def _cmd_pack_entrypoint(args: argparse.Namespace) -> int:
    from daskstep.pack import pack

    print(pack(Path(args.output)))
    return 0


COMMANDS = {
    "validate": _cmd_validate,
    "run": _cmd_run,
    "test": _cmd_test,
    "render": cmd_render,
    "wait-step": _cmd_wait_step,
    "images": _cmd_images,
    "gc": lambda args: collect(kind_of(args.backend), args.all),
    "pack-entrypoint": _cmd_pack_entrypoint,
    "logs": cmd_logs,
    "list": cmd_list,
    "status": cmd_status,
    "prune": cmd_prune,
    "sidecar": _cmd_sidecar,
    "ui": cmd_ui,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    running = argv is None and sys.argv[1:2] == ["run"]
    if running:
        from daskstep.secret_env import SECRET_VARIABLES, reexec_for_run, settle

        reexec_for_run(SECRET_VARIABLES)  # before anything starts: see secret_env's doc
        settle()
    code = _main(sys.argv[1:] if argv is None else argv)
    if running:  # everything is stopped, written and said
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Skip the interpreter's shutdown with distributed imported (0.3 s at every run's end):
    teardown has stopped what the run started, and the report's process is on its own."""
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _main(argv: list[str]) -> int:
    if (code := passthrough(argv)) is not None:
        return code
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        for line in e.lines():
            print(line, file=sys.stderr)
        return e.exit_code
    except DaskstepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # the reader went (`daskstep logs | head`): stop quietly, as cat
        quiet(sys.stdout)
        return 0
    except OSError as e:  # e.g. an unwritable workspace: one line, not a traceback
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
