"""E8: a small Vision Transformer on the digits, jaxdrop against Flax's dropout and optax.adamw.

Same as `jaxdrop run e8`; see `python experiments/e8_vit.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e8", *sys.argv[1:]]))
