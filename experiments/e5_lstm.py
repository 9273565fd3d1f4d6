"""E5: stacked LSTM with recurrent dropout (seed 002).

Same as `jaxdrop run e5`; see `python experiments/e5_lstm.py --help`.
"""

import sys

from jaxdrop.cli import main

if __name__ == "__main__":
  sys.exit(main(["run", "e5", *sys.argv[1:]]))
