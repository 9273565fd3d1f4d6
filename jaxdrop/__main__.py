"""``python -m jaxdrop``: the same as the ``jaxdrop`` command."""

import sys

from jaxdrop.cli import main

sys.exit(main())
