"""``python -m experiments``: list, run and reproduce the experiments (see ``--help``)."""

import sys

from experiments.cli import main

sys.exit(main())
