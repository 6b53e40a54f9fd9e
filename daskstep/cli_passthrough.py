"""Commands that own their options (the step wrapper, the credential sidecars, the reaper):
argparse's REMAINDER would not pass options that come right after the command name."""

from __future__ import annotations

import sys
from pathlib import Path

INSTALL = (
    "daskstep entrypoint install DIR puts this wrapper, as one file entrypoint.pyz, into DIR "
    "(a volume a step container mounts), to be run there as python3 DIR/entrypoint.pyz "
    "[OPTIONS] -- CMD...; see daskstep entrypoint install --help"
)


def passthrough(argv: list[str]) -> int | None:
    """The command's exit code, or None when `argv` is none of these commands."""
    if argv[:2] == ["entrypoint", "install"]:
        return _install(argv[2:])
    if argv[:1] == ["entrypoint"]:
        from entrypoint.__main__ import main as entrypoint_main

        # the entrypoint's own options, under our name, and a word about `install`
        return entrypoint_main(argv[1:], prog="daskstep entrypoint", epilog=INSTALL)
    if argv[:2] == ["sidecar", "kerberos"]:
        from sidecar.kerberos import main as kerberos_main

        return kerberos_main(argv[2:])
    if argv[:2] == ["sidecar", "voms"]:
        from sidecar.voms import main as voms_main

        return voms_main(argv[2:])
    if argv[:2] == ["sidecar", "reaper"]:
        from sidecar.reaper import main as reaper_main

        return reaper_main(argv[2:])
    return None


def _install(argv: list[str]) -> int:
    """`daskstep entrypoint install DIR`, with its own --help; a bad DIR is one line, exit 2."""
    from daskstep.cli_parts import Parser as _Parser
    from daskstep.pack import install

    p = _Parser(
        prog="daskstep entrypoint install",
        description="Put the step wrapper, entrypoint.pyz, into DIR: a volume the step "
        "container mounts, as Tekton's init container copies its entrypoint. The daskstep "
        "image's own copy (/daskstep/entrypoint.pyz) when there is one, else a fresh one.",
    )
    p.add_argument("folder", metavar="DIR", help="the folder to put it in (made if missing)")
    folder = Path(p.parse_args(argv).folder)
    try:
        print(install(folder))
    except OSError as e:
        print(
            f"error: daskstep entrypoint install: DIR: cannot put entrypoint.pyz into {folder} "
            f"({e.strerror}); give a folder you can write to",
            file=sys.stderr,
        )
        return 2
    return 0
