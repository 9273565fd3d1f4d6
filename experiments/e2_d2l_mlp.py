"""E2 (tutorials 001 and 004): d2l's two-hidden-layer MLP with dropout 0.2 / 0.5,
from scratch (the pure ``jaxdrop.dropout`` function) and concise (the linen layer)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses

import flax.linen as nn

import jaxdrop
from experiments import cli
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import MLP, init_scratch_mlp, scratch_mlp
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, epochs_for, linen_task, train_run
from jaxdrop import training

VERSIONS = ("scratch", "concise")


@dataclasses.dataclass
class E2Config(Config):
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.5, "SGD learning rate")
  dropout1: float = option(0.2, "drop probability after the first hidden layer", rate=True)
  dropout2: float = option(0.5, "drop probability after the second hidden layer", rate=True)
  hidden: int = option(256, "units of each hidden layer")
  init_std: float = option(0.01, "standard deviation of the Normal weight init", nonnegative=True)
  versions: tuple[str, ...] = option(VERSIONS, "which implementations to train", choices=VERSIONS)


def acceptance(final: dict[str, float]) -> dict[str, bool]:
  """The source tutorial's own check: train loss < 0.5, 0.7 < train acc <= 1, 0.7 < test acc <= 1."""
  return {
      "train_loss < 0.5": final["train_loss"] < 0.5,
      "0.7 < train_acc <= 1": 0.7 < final["train_acc"] <= 1,
      "0.7 < test_acc <= 1": 0.7 < final["test_acc"] <= 1,
  }


def build(version: str, config: E2Config, data):
  """The task and the parameter initializer (``init_key -> params``) of one version."""
  rates = (config.dropout1, config.dropout2)
  if version == "scratch":
    sizes = (data.x_train[0].size, config.hidden, config.hidden, data.num_classes)
    task = training.Task(lambda p, x, train, key: scratch_mlp(p, x, rates, key if train else None), training.cross_entropy)
    return task, lambda key: init_scratch_mlp(key, sizes, config.init_std)
  model = MLP((config.hidden, config.hidden), rates, data.num_classes, kernel_init=nn.initializers.normal(config.init_std))
  return linen_task(model), lambda key: model.init(key, data.x_train[:1], train=False)["params"]


def run(config: E2Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "fashion_mnist", config.data_dir)
  record.set_dataset(data, config.dataset)
  if data.note:
    emit(f"data: {data.note}")
  epochs = epochs_for(config, data, "fashion_mnist", 10, emit)
  for version in config.versions:
    task, init = build(version, config, data)
    entry, _ = train_run(version, task, init, jaxdrop.sgd(config.lr), data, config, record, quiet=quiet, emit=emit,
                         epochs=epochs)
    entry["checks"] = acceptance(entry["final"])
    verdict = "passes" if all(entry["checks"].values()) else "FAILS"
    emit(describe(entry) + f"; {verdict} the source tutorial's check (train loss < 0.5, accuracies > 0.7)")
    record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"], ("train_loss", "train_acc", "test_acc"), ylim=(0, 1),
      title=f"E2: d2l MLP, dropout {config.dropout1}/{config.dropout2}",
  ))


EXPERIMENT = Experiment(
    name="e2",
    title="d2l MLP 784-256-256-10, dropout 0.2/0.5, N(0, 0.01) init, SGD(lr=0.5), batch 256, 10 epochs;"
    " scratch and concise versions",
    source="tutorials 001 and 004 (d2l dropout on Fashion-MNIST)",
    config=E2Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(cli.main(["run", "e2", *sys.argv[1:]]))
