import sys

from daskstep.cli_passthrough import passthrough

# The sidecars, the reaper and the entrypoint own their options: they start without the rest
# of the command line's imports (a run starts several of them).
code = passthrough(sys.argv[1:])
if code is None:
    from daskstep.cli import main

    code = main()
if sys.argv[1:2] == ["sidecar"]:
    from sidecar.lifecycle import exit_after_stop

    exit_after_stop(code)
sys.exit(code)
