"""`python -m daskstep.engines.cwl --workspace DIR --file WORKFLOW.cwl --parameters P.json`:
cwltool through its Python API, every tool's command line run under the entrypoint.

How: cwltool makes each process object through `LoadingContext.construct_tool_object`; ours
makes CommandLineTools whose job runner is a CommandLineJob that puts
`python -m daskstep.engines.tool --name STEP --` before the tool's command line. That is the
`runtime` prefix through which cwltool's own container jobs put `docker run …` there, so
quoting, staging, stdin/stdout capture, success codes and outputs stay cwltool's. The step is
named after cwltool's job (the workflow step's id).

The tools run as with `--no-container`: on the local backend every step shares daskstep's
Python, as serial steps do, so a DockerRequirement's image is not used (said once in the
engine log). `--preserve-entire-environment` passes DASK_SCHEDULER_URI, the TLS variables and
the credential variables through to the tools. Final outputs go to `<workspace>/outputs`, as
REANA's demos run cwltool (`--outdir ../outputs`); cwltool's scratch stays under
`.daskstep/engine/cwl/`.

Parameters, as REANA reads `inputs.parameters` for CWL: `input` names the job order file;
the other parameters are inputs, given over the file's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from cwltool.command_line_tool import CommandLineTool
from cwltool.context import LoadingContext, RuntimeContext
from cwltool.job import CommandLineJob
from cwltool.loghandler import _logger
from cwltool.process import Process
from cwltool.workflow import default_make_tool

from daskstep.engines.tool import driver_arguments

_said_images: set[str] = set()


def tool_prefix(name: str) -> list[str]:
    """What goes before a tool's command line: the tool wrapper, named after the step."""
    return [sys.executable, "-m", "daskstep.engines.tool", "--name", name, "--"]


class DaskstepJob(CommandLineJob):
    """A tool's job whose command line runs under the entrypoint."""

    def _execute(
        self,
        runtime: list[str],
        env: MutableMapping[str, str],
        runtimeContext: RuntimeContext,
        monitor_function: Any = None,
    ) -> None:
        prefix = tool_prefix(str(self.name))
        super()._execute(prefix + list(runtime), env, runtimeContext, monitor_function)


class DaskstepTool(CommandLineTool):
    """A CommandLineTool whose jobs are DaskstepJobs, images or not."""

    def make_job_runner(self, runtimeContext: RuntimeContext) -> type[CommandLineJob]:
        docker, _ = self.get_requirement("DockerRequirement")
        image = str((docker or {}).get("dockerPull") or (docker or {}).get("dockerImageId") or "")
        if image and image not in _said_images:
            _said_images.add(image)
            _logger.warning(
                "daskstep: %s: the local backend runs tools in daskstep's own Python; "
                "the image %s is not used",
                self.tool.get("id", "tool"),
                image,
            )
        return DaskstepJob


def make_tool(toolpath_object: Any, loadingContext: LoadingContext) -> Process:
    """cwltool's own factory, but with DaskstepTool for every CommandLineTool."""
    tool = isinstance(toolpath_object, MutableMapping)
    if tool and toolpath_object.get("class") == "CommandLineTool":
        return DaskstepTool(toolpath_object, loadingContext)
    return default_make_tool(toolpath_object, loadingContext)


def job_order(workspace: Path, parameters: dict[str, Any], folder: Path) -> list[str]:
    """cwltool's trailing arguments: the job order file, merged with the other parameters."""
    given = dict(parameters)
    name = given.pop("input", None)
    if not given:
        return [str(workspace / name)] if name else []
    doc: dict[str, Any] = {}
    if name:
        import yaml

        loaded = yaml.safe_load((workspace / name).read_text())
        doc = dict(loaded) if isinstance(loaded, dict) else {}
    doc.update(given)
    path = folder / "job-order.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    # relative File paths stay relative to where they were written: the job file, or the
    # reana.yaml's folder (the workspace)
    basedir = (workspace / name).parent if name else workspace
    return ["--basedir", str(basedir), str(path)]


def cwltool_arguments(
    workspace: Path, file: Path, parameters: dict[str, Any], engine: Path
) -> list[str]:
    folder = engine / "cwl"
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["--no-container", "--preserve-entire-environment", "--disable-color"]
    argv += ["--outdir", str(workspace / "outputs")]
    argv += ["--tmpdir-prefix", f"{folder}/tmp-", "--tmp-outdir-prefix", f"{folder}/out-"]
    trailing = job_order(workspace, parameters, folder)
    if trailing[:1] == ["--basedir"]:
        argv += trailing[:2]
        trailing = trailing[2:]
    return [*argv, str(file), *trailing]


class EndsLines:
    """cwltool's final output object ends without a newline: the engine log's next line would
    be glued to it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last = "\n"

    def write(self, text: str) -> int:
        if text:
            self.last = text[-1]
        return self.stream.write(text)

    def flush(self) -> None:
        if self.last != "\n":
            self.write("\n")
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    args, parameters = driver_arguments("python -m daskstep.engines.cwl", argv)
    from cwltool.main import main as cwltool

    loading = LoadingContext()
    loading.construct_tool_object = make_tool
    os.chdir(args.workspace)
    arguments = cwltool_arguments(args.workspace, args.file, parameters, args.folder)
    print(f"daskstep: cwltool {' '.join(arguments)}", file=sys.stderr, flush=True)
    return cwltool(argsl=arguments, loadingContext=loading, stdout=EndsLines(sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
