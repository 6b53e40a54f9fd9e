"""`daskstep logs`, `list`, `status` and `prune`: the commands that read a workspace's numbered
runs (daskstep/record.py) and start nothing."""

from __future__ import annotations

import argparse
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.record import Workspace


def count(text: str) -> int:
    """A non-negative whole number (a run's, a line's, how many to keep)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; write e.g. 3") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; write 0 or more")
    return value


def run_number(text: str) -> int:
    value = count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("runs are numbered from 1; write e.g. --run 1")
    return value


def run_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", metavar="N", type=run_number, help="the workspace's run N (default: the latest)"
    )


def add_run_readers(sub: Any) -> None:
    """Their parsers, under the `daskstep` command's subparsers."""
    p = sub.add_parser("logs", help="print the job, scheduler and worker logs of a run")
    p.add_argument("--workspace", metavar="DIR", default=".", help="default: .")
    run_option(p)
    p.add_argument("--component", choices=("job", "scheduler", "worker", "engine"))
    p.add_argument("--worker", metavar="NAME", help="one worker's log (implies --component worker)")
    p.add_argument("--follow", "-f", action="store_true", help="show new lines until the run ends")
    p.add_argument(
        "--since",
        metavar="SEQ",
        type=count,
        default=0,
        help="each stream's lines after number SEQ (--numbers shows them)",
    )
    p.add_argument(
        "--numbers", "-n", action="store_true", help="show each line's number, as --since takes"
    )

    p = sub.add_parser("list", help="the workspace's runs, newest first")
    p.add_argument("--workspace", metavar="DIR", default=".", help="default: .")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("status", help="one run's status: steps, exit codes, cluster, events")
    p.add_argument("--workspace", metavar="DIR", default=".", help="default: .")
    run_option(p)
    p.add_argument("--json", action="store_true", help="print its status.json")

    p = sub.add_parser("prune", help="remove old runs' records (never the latest or a live one)")
    p.add_argument("--workspace", metavar="DIR", default=".", help="default: .")
    p.add_argument("--keep", metavar="K", type=count, help="keep the newest K runs")
    p.add_argument("--before", metavar="DATE", help="remove runs begun before DATE (2026-12-01)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")


def cmd_logs(args: argparse.Namespace) -> int:
    from daskstep.logview import View, show

    run = Workspace(args.workspace).find(args.run)
    view = View(run, args.component, args.worker, args.since, args.numbers)
    return show(view, args.follow)


def cmd_list(args: argparse.Namespace) -> int:
    from daskstep.runs_view import show_list

    return show_list(Workspace(args.workspace), args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from daskstep.runs_view import show_status

    return show_status(Workspace(args.workspace).find(args.run), args.json)


def cmd_prune(args: argparse.Namespace) -> int:
    from daskstep.runs_view import parse_date, prune

    before = None
    if args.before is not None:
        try:
            before = parse_date(args.before)
        except ValueError as e:
            raise InputError([Problem("--before", str(e))]) from None
    return prune(Workspace(args.workspace), args.keep, before, args.dry_run)
