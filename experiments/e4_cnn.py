"""E4: CIFAR-10 CNN with dropout 0.25 (seed 003).

Same as `jaxdrop run e4`; see `python experiments/e4_cnn.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e4", *sys.argv[1:]]))
