"""What every sidecar started by `daskstep run` shares: it stops when the run dies, however it
dies, and the credential files it was told about go with it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal


def follow_run() -> None:
    """Started by `daskstep run` (it sets DASKSTEP_PARENT_PID): SIGTERM when it dies."""
    parent = os.environ.get("DASKSTEP_PARENT_PID")
    if parent:
        from entrypoint.lifetime import die_with_parent

        die_with_parent(signal.SIGTERM, expected_parent=int(parent))


def add_remove_on_exit(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--remove-on-exit",
        metavar="PATH",
        action="append",
        default=[],
        help=f"delete this file however we exit (repeatable); daskstep run names the {what}",
    )


def remove_files(paths: list[str]) -> None:
    """A credential must not outlive the run that asked for it, even one whose runner was killed."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
