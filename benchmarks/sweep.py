"""A hyperparameter grid in one compiled program (``jaxdrop.training.fit_sweep``) against the same runs one by one.

The grid: E2's MLP (784-256-256-10 from scratch, d2l's N(0, 0.01) init, SGD(0.5),
batch 256) on ``mnist_5k``, a dropout rate on both hidden layers in
{0, 0.2, 0.35, 0.5} x weight decay in {0, 1e-4, 1e-3} x seeds 0..3: 48 runs.
``fit_sweep`` trains them in one vmapped program; the baseline trains the same 48
one after another with ``fit`` (each run its own compiled program, as a loop over
a grid does). Both times are wall time including compilation, in one process,
the sweep first. The table also gives how far the two disagree (final test
accuracy, in examples of the 1,000).

Run: ``python -m benchmarks.sweep [--epochs 10] [--quick]``, or as the ``sweep`` section of
``python -m benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the repository's packages from its root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax.numpy as jnp

import jaxdrop
from experiments.data import load_dataset
from experiments.models import init_scratch_mlp, scratch_mlp
from jaxdrop import training

__all__ = ["GRID", "bench_sweep", "main", "render"]

GRID = {"rate": (0.0, 0.2, 0.35, 0.5), "decay": (0.0, 1e-4, 1e-3)}
SEEDS = (0, 1, 2, 3)
QUICK = {"grid": {"rate": (0.0, 0.5), "decay": (0.0,)}, "seeds": (0,), "epochs": 1, "train": 512}


def _task_for(h):
  return training.Task(lambda p, x, train, key: scratch_mlp(p, x, (h["rate"], h["rate"]), key if train else None),
                       training.cross_entropy)


def _tx_for(h):
  return jaxdrop.sgd(0.5, weight_decay=h["decay"])


def _init(key):
  return init_scratch_mlp(key, (784, 256, 256, 10), 0.01)


def bench_sweep(grid: dict[str, tuple] | None = None, seeds=SEEDS, epochs: int = 10,
                train: int | None = None) -> dict[str, Any]:
  """Times the grid as one ``fit_sweep`` and as one ``fit`` per run; returns the figures.

  Args:
    grid: the axes (default :data:`GRID`).
    seeds: each point's seeds.
    epochs: epochs per run.
    train: use only the first ``train`` training images (the tests' tiny form); ``None``: all 4,000.
  """
  grid = GRID if grid is None else grid
  data = load_dataset("mnist_5k")
  if train is not None:
    data = data._replace(x_train=data.x_train[:train], y_train=data.y_train[:train])
  points = training.grid(**grid)
  options = training.FitOptions(epochs=epochs, batch_size=256, quiet=True, path="scan")
  started = time.perf_counter()
  swept = training.fit_sweep(_task_for, _init, _tx_for, data, options, hparams=points, seeds=list(seeds))
  sweep_s = time.perf_counter() - started
  started = time.perf_counter()
  alone = []
  for result in swept:
    point = {k: jnp.float32(result.config[k]) for k in grid}
    seed = result.config["seed"]
    alone.append(training.fit(_task_for(point), _init(training.run_keys(seed)["init"]), _tx_for(point), data,
                              options, seed=seed))
  fit_s = time.perf_counter() - started
  gaps = [abs(s.history["test_acc"][-1] - a.history["test_acc"][-1]) for s, a in zip(swept, alone, strict=True)]
  return {"runs": len(swept), "epochs": epochs, "train_size": len(data.y_train), "sweep_s": sweep_s,
          "fit_s": fit_s, "speedup": fit_s / sweep_s,
          "max_test_acc_gap_examples": round(max(gaps) * len(data.y_test)),
          "best": max(({**r.config, "test_acc": r.history["test_acc"][-1]} for r in swept),
                      key=lambda c: c["test_acc"])}


def render(row: dict[str, Any]) -> str:
  """The section's Markdown table."""
  return "\n".join([
      "| runs | epochs | train images | fit_sweep s | fit one by one s | speedup | largest test-acc gap |",
      "|---|---|---|---|---|---|---|",
      f"| {row['runs']} | {row['epochs']} | {row['train_size']:,} | {row['sweep_s']:.1f} | {row['fit_s']:.1f} |"
      f" {row['speedup']:.1f}x | {row['max_test_acc_gap_examples']} of 1,000 |",
  ])


def main(argv: list[str] | None = None) -> int:
  """``python -m benchmarks.sweep [--epochs N] [--quick]``; prints the table."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default: 10)")
  parser.add_argument("--quick", action="store_true", help="a tiny grid, for a smoke test")
  args = parser.parse_args(argv)
  if args.epochs < 1:
    parser.error(f"--epochs must be a positive integer, got {args.epochs}")
  kwargs = QUICK if args.quick else {"epochs": args.epochs}
  print(render(bench_sweep(**kwargs)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
