"""`python -m daskstep.engines.snakemake --workspace DIR --file Snakefile --parameters P.json`:
snakemake, every rule's shell command run under the entrypoint, the Snakefile untouched.

How, and why so (read in snakemake 9's source, `snakemake/shell.py`): a rule's shell command is
run as `Popen(cmd, shell=True, executable=X)`, i.e. `X -c CMD`, where X is the rule's
`shell_exec` resource if it has one (snakemake 8.14+), else `shell.executable()`. One executable
for every rule (a wrapper Snakefile's `shell.executable(...)` that `include:`s the user's)
cannot tell which rule calls it: CMD is formatted in the rule's context, but `shell.prefix()`
is formatted once, when it is set, and nothing of the job reaches the process's environment.
An executor plugin would be a package of its own and would replace snakemake's local executor.
So the rules are listed first (`snakemake --list-rules`, with the same config), each gets an
executable of its own, `.daskstep/engine/shells/<rule>`, that runs
`python -m daskstep.engines.tool --name <rule> -- bash -euo pipefail -c CMD` (the
`set -euo pipefail` snakemake gives bash itself), and `--set-resources <rule>:shell_exec=<it>`
hands each rule its own: public command-line options only, no snakemake internals patched.

What that means: `shell:` commands, `shell()` calls inside `run:` blocks and `script:` rules
run under the entrypoint, each a step named after its rule; a `run:` block's own Python runs in
snakemake's process and is no step. A rule's own `shell_exec` is replaced (its commands run
under bash). Rules run one at a time (`--cores 1`): they are clients of the Dask cluster, whose
workers do the parallel work.

Parameters, as REANA reads `inputs.parameters` for Snakemake: `input` names a config file; the
other parameters are config values, given over the file's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from daskstep.engines.tool import driver_arguments


def config_arguments(workspace: Path, parameters: dict[str, Any], folder: Path) -> list[str]:
    """`--configfile` for REANA's `input`, then the other parameters as a config file of their
    own, later so that they win."""
    given = dict(parameters)
    name = given.pop("input", None)
    files = [str(workspace / name)] if name else []
    if given:
        path = folder / "config.json"  # JSON is YAML, as snakemake reads config files
        path.write_text(json.dumps(given, indent=2, default=str) + "\n")
        files.append(str(path))
    return ["--configfile", *files] if files else []


def list_rules(common: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The rules of the workflow, as snakemake itself reads them (modules, `use rule` too)."""
    argv = [sys.executable, "-m", "snakemake", *common, "--list-rules"]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    names = [line.strip() for line in done.stdout.splitlines() if line and not line[0].isspace()]
    return [n for n in names if n.isidentifier()], done


def write_shells(rules: list[str], folder: Path) -> dict[str, Path]:
    """One executable per rule: the tool wrapper, named after the rule, around bash."""
    folder.mkdir(parents=True, exist_ok=True)
    bash = shutil.which("bash")
    shell = [bash, "-euo", "pipefail"] if bash else ["/bin/sh", "-eu"]
    shells = {}
    for rule in rules:
        path = folder / rule
        wrapper = [sys.executable, "-m", "daskstep.engines.tool", "--name", rule, "--", *shell]
        path.write_text(
            "#!/bin/sh\n"
            f"# daskstep: rule {rule}'s shell commands run under the entrypoint (generated)\n"
            f'exec {shlex.join(wrapper)} "$@"\n'
        )
        path.chmod(0o755)
        shells[rule] = path
    return shells


def snakemake_arguments(
    workspace: Path, file: Path, parameters: dict[str, Any], folder: Path
) -> list[str]:
    """Everything but the shells: the same for listing the rules and for running them."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["--snakefile", str(file), "--directory", str(workspace)]
    argv += ["--cores", "1", "--printshellcmds", "--nocolor"]
    return argv + config_arguments(workspace, parameters, folder)


def main(argv: list[str] | None = None) -> int:
    args, parameters = driver_arguments("python -m daskstep.engines.snakemake", argv)
    os.chdir(args.workspace)
    common = snakemake_arguments(args.workspace, args.file, parameters, args.folder)
    rules, listed = list_rules(common)
    if listed.returncode != 0:
        sys.stderr.write(listed.stderr)
        return listed.returncode
    shells = write_shells(rules, args.folder / "shells")
    argv = [sys.executable, "-m", "snakemake", *common]
    if shells:
        argv += ["--set-resources", *(f"{rule}:shell_exec={path}" for rule, path in shells.items())]
    print(f"daskstep: {shlex.join(argv)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the engine step's process: signals reach snakemake itself
    return 70  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
