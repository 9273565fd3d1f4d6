"""E3: weight decay on high-dimensional linear regression (seed 004).

Same as `jaxdrop run e3`; see `python experiments/e3_weight_decay.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e3", *sys.argv[1:]]))
