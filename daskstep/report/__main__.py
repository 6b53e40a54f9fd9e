"""`python -m daskstep.report FOLDER`: draw a run's report, outliving `daskstep run`'s prompt."""

import sys

from daskstep.report.recorder import main

sys.exit(main(sys.argv[1:]))
