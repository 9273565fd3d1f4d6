"""E2: d2l MLP with dropout 0.2/0.5, scratch and concise (seeds 001, 004).

Same as `jaxdrop run e2`; see `python experiments/e2_d2l_mlp.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e2", *sys.argv[1:]]))
