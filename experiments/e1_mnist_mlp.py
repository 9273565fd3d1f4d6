"""E1: MNIST MLP with dropout 0.5 (seed 000).

Same as `jaxdrop run e1`; see `python experiments/e1_mnist_mlp.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e1", *sys.argv[1:]]))
