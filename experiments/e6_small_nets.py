"""E6: seed 002's small networks.

Same as `jaxdrop run e6`; see `python experiments/e6_small_nets.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e6", *sys.argv[1:]]))
