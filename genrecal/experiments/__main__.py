"""`python -m genrecal.experiments <command> ...`: the same as `genrecal-experiments`."""
import sys

from genrecal.experiments.cli import console_main

sys.exit(console_main())
