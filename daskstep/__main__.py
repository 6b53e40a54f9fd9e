import sys

from daskstep.cli import main

sys.exit(main())
