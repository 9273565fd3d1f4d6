"""E7 (tutorial 004, end): explicit L1 and L2 penalties added to the loss.

As in the seed, ``loss += lam * sum(torch.norm(param, p))`` over every
parameter (biases included), with the plain, non-squared L2 norm, and
``lam = 0.01``. The classifier is E2's MLP with dropout.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses

import flax.linen as nn
import jax
import numpy as np

import jaxdrop
from experiments import cli
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import MLP
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, epochs_for, init_linen, linen_task, train_run

VERSIONS = ("none", "l1", "l2")


@dataclasses.dataclass
class E7Config(Config):
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.5, "SGD learning rate")
  l1: float = option(0.01, "lambda of the L1 penalty", nonnegative=True)
  l2: float = option(0.01, "lambda of the (non-squared) L2 norm penalty", nonnegative=True)
  dropout1: float = option(0.2, "drop probability after the first hidden layer", rate=True)
  dropout2: float = option(0.5, "drop probability after the second hidden layer", rate=True)
  versions: tuple[str, ...] = option(VERSIONS, "penalties to compare", choices=VERSIONS)


def penalty_for(version: str, config: E7Config):
  if version == "l1":
    return lambda p: config.l1 * jaxdrop.l1_penalty(p, mask=jaxdrop.all_params)
  if version == "l2":
    return lambda p: config.l2 * jaxdrop.l2_norm_penalty(p, mask=jaxdrop.all_params)
  return None


def run(config: E7Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "fashion_mnist", config.data_dir)
  record.set_dataset(data, config.dataset)
  if data.note:
    emit(f"data: {data.note}")
  model = MLP((256, 256), (config.dropout1, config.dropout2), data.num_classes, kernel_init=nn.initializers.normal(0.01))
  epochs = epochs_for(config, data, "fashion_mnist", 10, emit)
  for version in config.versions:
    task = linen_task(model, penalty=penalty_for(version, config))
    entry, results = train_run(version, task, init_linen(model, data.x_train), jaxdrop.sgd(config.lr), data, config,
                               record, quiet=quiet, emit=emit, epochs=epochs)
    weights = [np.asarray(w) for w in jax.tree.leaves(results[0].state.params)]  # the first seed's
    entry["l1_norm"] = float(sum(np.abs(w).sum() for w in weights))
    entry["l2_norm_sum"] = float(sum(np.linalg.norm(w.ravel()) for w in weights))
    entry["near_zero_fraction"] = float(sum((np.abs(w) < 1e-3).sum() for w in weights) / sum(w.size for w in weights))
    emit(describe(entry) + f"; sum|w| {entry['l1_norm']:.1f}, sum||w|| {entry['l2_norm_sum']:.2f},"
         f" |w| < 1e-3: {entry['near_zero_fraction']:.1%}")
    record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"], ("train_loss", "train_acc", "test_acc"), ylim=(0, 1),
      title=f"E7: L1 (lambda={config.l1:g}) and L2 (lambda={config.l2:g}) penalties",
  ))


EXPERIMENT = Experiment(
    name="e7",
    title="explicit penalties: loss + 0.01 * sum ||w||_1, or + 0.01 * sum ||w||_2, vs none (E2's MLP)",
    source="tutorial 004, end (L1/L2 regularization in PyTorch)",
    config=E7Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(cli.main(["run", "e7", *sys.argv[1:]]))
