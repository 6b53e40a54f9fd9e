"""Commands that own their options (the step wrapper, the credential sidecars, the reaper):
argparse's REMAINDER would not pass options that come right after the command name."""

from __future__ import annotations

import sys
from pathlib import Path


def passthrough(argv: list[str]) -> int | None:
    """The command's exit code, or None when `argv` is none of these commands."""
    if argv[:2] == ["entrypoint", "install"]:
        from daskstep.pack import install

        if len(argv) != 3:
            print(
                "error: daskstep entrypoint install: give one folder: install DIR", file=sys.stderr
            )
            return 2
        print(install(Path(argv[2])))
        return 0
    if argv[:1] == ["entrypoint"]:
        from entrypoint.__main__ import main as entrypoint_main

        return entrypoint_main(argv[1:])
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
