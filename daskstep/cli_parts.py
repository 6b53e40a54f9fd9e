"""What every `daskstep` command shares: the parser whose usage errors are one line, and
loading a workflow with its warnings said."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """A usage error is one line naming the option and the fix, exit 2: no usage block."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def load(reana_yaml: str, limits: str | None, parameters: dict[str, str] | None = None) -> Any:
    """The checked workflow (bad input raises InputError: one line each, exit 2); its
    warnings on stderr."""
    from daskstep.workflow.limits import load_limits
    from daskstep.workflow.spec import load_workflow

    workflow, warnings = load_workflow(reana_yaml, load_limits(limits), parameters)
    for w in warnings:
        print(f"warning: {reana_yaml}: {w}", file=sys.stderr)
    return workflow
