"""`python -m daskstep.engines.tool --name NAME -- CMD...`: one CWL tool or Snakemake rule,
started by the engine, run under the entrypoint as one step of the run.

The engine's own output is the engine log; a tool's output belongs in the job log, as a serial
step's does. The driver names its output stream (device and inode, in
DASKSTEP_ENGINE_OUTPUT), so whichever of our stdout and stderr is still that stream (the tool
declared no capture of its own) is pointed at the job log here, and a file the tool's output
was captured to is left alone. Then the step's status file is claimed in the order the engine
started them (`.daskstep/steps/NN-<name>.json`) and written at once as running, so status.json
shows the step while it runs. The entrypoint runs in this process: no second interpreter start.

Only the standard library and `entrypoint/` are imported here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

STEPS_ENV = "DASKSTEP_ENGINE_STEPS"  # the folder of the steps' status files
JOB_LOG_ENV = "DASKSTEP_JOB_LOG"  # where the tools' output goes
OUTPUT_ENV = "DASKSTEP_ENGINE_OUTPUT"  # "dev:ino" of the engine's output stream
USAGE = "usage: python -m daskstep.engines.tool --name NAME -- CMD..."


def stream_id(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def driver_arguments(prog: str, argv: list[str] | None) -> tuple[Any, dict[str, Any]]:
    """A driver's options (the workspace, the workflow file, REANA's parameters as a JSON
    file) and the parameters read; the drivers are started by engines/engine_step.py alike. The
    engine's output stream is marked here, so that tools' output that reaches it goes to the
    job log instead."""
    import argparse
    from pathlib import Path

    from daskstep.record import STATE

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--file", required=True, type=Path)
    p.add_argument("--parameters", type=Path)
    p.add_argument("--folder", type=Path, help="the driver's own files (the run's engine/)")
    args = p.parse_args(argv)
    args.folder = args.folder or args.workspace / STATE / "engine"
    parameters = json.loads(args.parameters.read_text()) if args.parameters else {}
    os.environ[OUTPUT_ENV] = stream_id(1)
    return args, parameters


def to_job_log(job_log: str, engine_output: str) -> None:
    """stdout and stderr that are still the engine's output go to the job log instead."""
    from daskstep.engines.output import open_for_tools

    fd = open_for_tools(job_log)
    try:
        for target in (1, 2):
            try:
                if stream_id(target) == engine_output:
                    os.dup2(fd, target)
            except OSError:  # a closed stream: nothing of the tool's would reach the engine
                continue
    finally:
        os.close(fd)


def claim_status_file(folder: str, name: str) -> str:
    """`NN-<name>.json`, NN the next free number: the order in which the engine started them."""
    os.makedirs(folder, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "step"
    number = 1 + len([f for f in os.listdir(folder) if f[:1].isdigit() and f.endswith(".json")])
    while True:
        path = os.path.join(folder, f"{number:02d}-{safe}.json")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            number += 1
            continue
        from entrypoint.reporter import iso

        running = {
            "name": name,
            "reason": "Running",
            "exit_code": None,
            "started_at": iso(time.time()),
        }
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(running) + "\n")
        return path


def _name_it(path: str, name: str) -> None:
    """The entrypoint's status has no step name: add it, as the run reads it (atomically)."""
    from entrypoint.reporter import atomic_write

    try:
        with open(path) as f:
            doc = json.load(f)
        atomic_write(path, json.dumps({"name": name, **doc}, indent=2) + "\n")
    except (OSError, ValueError):
        pass  # the run falls back to the file's name


def _mark(job_log: str | None, line: str) -> None:
    """Where the step's lines begin and end in the job log (what `daskstep test` reads)."""
    if job_log:
        from daskstep.engines.output import open_for_tools

        fd = open_for_tools(job_log)
        try:
            os.write(fd, f"daskstep: {line}\n".encode())
        finally:
            os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "--name" or argv[2] != "--":
        print(USAGE, file=sys.stderr)
        return 64
    name, command = argv[1], argv[3:]
    folder = os.environ.get(STEPS_ENV)
    if not folder:
        print(f"daskstep: {STEPS_ENV} is not set; run this under `daskstep run`", file=sys.stderr)
        return 64
    job_log, output = os.environ.get(JOB_LOG_ENV), os.environ.get(OUTPUT_ENV)
    if job_log and output:
        to_job_log(job_log, output)
    status_file = claim_status_file(folder, name)
    # the engine is our parent, not `daskstep run`: the step dies with the engine
    os.environ["DASKSTEP_PARENT_PID"] = str(os.getppid())
    options = ["--die-with-parent", "--status-file", status_file]
    options += ["--termination-log", status_file[: -len(".json")] + ".message"]
    from entrypoint.__main__ import main as entrypoint

    _mark(job_log, f"step {name} started")
    code = entrypoint([*options, "--", *command])
    _name_it(status_file, name)
    _mark(job_log, f"step {name} " + ("finished" if code == 0 else f"failed with exit code {code}"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
