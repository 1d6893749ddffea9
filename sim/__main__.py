"""`python -m sim` runs the CLI."""

import sys

from sim.cli.main import main

sys.exit(main())
