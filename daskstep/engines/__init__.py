"""CWL and Snakemake workflows (REANA's `workflow.type: cwl|snakemake`): the engine runs as one
step of the run, and every tool or rule command it starts runs under the entrypoint.

- `engine_step.py`: the engine step as `daskstep run` starts and follows it, and the tools' status
  files folded into status.json while the engine runs;
- `tool.py`: what the engine starts in place of a tool's command (the entrypoint, in-process);
- `cwl.py`, `snakemake.py`: the drivers, one process each, whose output is the engine log.

Nothing is imported here: `tool.py` starts for every tool and must stay light.
"""
