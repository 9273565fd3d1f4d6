"""E1 (tutorial 000): PyTorch's MNIST MLP with dropout 0.5, SGD with momentum."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses

import numpy as np

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import MLP
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, epochs_for, init_linen, linen_task, train_run


@dataclasses.dataclass
class E1Config(Config):
  batch_size: int = option(32, "training batch size")
  lr: float = option(0.001, "SGD learning rate")
  momentum: float = option(0.9, "SGD momentum", nonnegative=True)
  dropout: float = option(0.5, "drop probability after the hidden layer", rate=True)
  hidden: int = option(512, "hidden units")
  log_every: int = option(100, "print the running loss every this many steps")


def normalize(x: np.ndarray) -> np.ndarray:
  """``ToTensor`` then ``Normalize((0.5,), (0.5,))``: ``[0, 1]`` to ``[-1, 1]``."""
  return (x - 0.5) / 0.5


def run(config: E1Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "mnist", config.data_dir, offline="mnist_5k")
  record.set_dataset(data, config.dataset)
  data = data._replace(x_train=normalize(data.x_train), x_test=normalize(data.x_test))
  model = MLP(hidden=(config.hidden,), rates=(config.dropout,), num_classes=data.num_classes)
  tx = jaxdrop.sgd(config.lr, momentum=config.momentum)
  epochs = epochs_for(config, data, "mnist", 5, emit)
  entry, results = train_run("mlp", linen_task(model), init_linen(model, data.x_train), tx, data, config, record,
                             quiet=quiet, emit=emit, epochs=epochs)
  for epoch, losses in enumerate(results[0].step_losses, start=1):  # the first seed's
    for end in range(config.log_every, len(losses) + 1, config.log_every):  # torch's "if i % 100 == 99"
      emit(f"[{epoch}, {end:5d}] loss: {losses[end - config.log_every:end].mean():.3f}")
  emit("Finished Training")
  emit(describe(entry) + " (dropout off at test time)")
  record.add_run(entry)
  record.add_figure(plot_curves(record.out_dir / "curves.png", [entry], title="E1: MLP with dropout 0.5"))


EXPERIMENT = Experiment(
    name="e1",
    title="MNIST MLP 784-512-10 with dropout 0.5, SGD(lr=0.001, momentum=0.9), batch 32, 5 epochs",
    source="tutorial 000 (PyTorch nn.Dropout on MNIST)",
    config=E1Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
