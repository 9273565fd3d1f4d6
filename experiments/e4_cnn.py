"""E4 (tutorial 003): a CIFAR-10 CNN with dropout 0.25 before and after its dense layer."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import CNN
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, epochs_for, init_linen, linen_task, train_run


@dataclasses.dataclass
class E4Config(Config):
  """The seed gives the network only; the training recipe (10 epochs, SGD with momentum) is ours."""

  batch_size: int = option(64, "training batch size")
  lr: float = option(0.01, "SGD learning rate")
  momentum: float = option(0.9, "SGD momentum", nonnegative=True)
  dropout: float = option(0.25, "drop probability before and after the 512-unit layer", rate=True)


def padding_for(height: int) -> str:
  """``"VALID"`` (the source tutorial's) when three valid 3x3 conv + 2x2 pool blocks fit, else ``"SAME"``."""
  for _ in range(3):
    height = (height - 2) // 2
  return "VALID" if height >= 1 else "SAME"


def run(config: E4Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "cifar10", config.data_dir)
  record.set_dataset(data, config.dataset)
  padding = padding_for(data.x_train.shape[1])
  if padding != "VALID":
    data = data._replace(note=f"{data.note}; convolutions use SAME padding for {data.x_train.shape[1]}-pixel inputs")
    record.set_dataset(data, config.dataset)
  if data.note:
    emit(f"data: {data.note}")
  model = CNN(rate=config.dropout, num_classes=data.num_classes, padding=padding)
  tx = jaxdrop.sgd(config.lr, momentum=config.momentum)
  epochs = epochs_for(config, data, "cifar10", 10, emit)
  entry, _ = train_run("cnn", linen_task(model), init_linen(model, data.x_train), tx, data, config, record,
                       quiet=quiet, emit=emit, epochs=epochs)
  entry["padding"] = padding
  emit(describe(entry))
  record.add_run(entry)
  record.add_figure(plot_curves(record.out_dir / "curves.png", [entry], title="E4: CNN with dropout 0.25"))


EXPERIMENT = Experiment(
    name="e4",
    title="CIFAR-10 CNN: 3 conv/ReLU/max-pool blocks (32, 64, 128), dropout 0.25, dense 512, dropout 0.25;"
    " SGD(lr=0.01, momentum=0.9)",
    source="tutorial 003 (dropout layer explained, PyTorch CNN)",
    config=E4Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
