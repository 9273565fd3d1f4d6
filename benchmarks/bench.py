"""Side-by-side speed and memory measurements; same as `jaxdrop bench`.

Run: python benchmarks/bench.py [--sections dropout epoch seeds memory] [--reps N] [--out DIR]
(PyTorch rows appear when torch is installed: pip install torch==2.13.0.)
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["bench", *sys.argv[1:]]))
