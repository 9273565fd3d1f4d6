"""E7: explicit L1 and L2 penalties (seed 004).

Same as `jaxdrop run e7`; see `python experiments/e7_penalties.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e7", *sys.argv[1:]]))
