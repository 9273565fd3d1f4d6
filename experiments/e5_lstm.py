"""E5 (tutorial 002): stacked LSTMs with Keras-style dropout and recurrent dropout.

The seed gives no data set. The task here is image classification read row
by row (each row of pixels is one time step), as in sequential MNIST: it is a
real sequence task, it runs offline on scikit-learn's 8x8 digits (8 steps of
8 features), and on MNIST (28 x 28) where that is prepared.
"""

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
from experiments.models import StackedLSTM
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, init_linen, linen_task, train_run


@dataclasses.dataclass
class E5Config(Config):
  epochs: int = option(50, "passes over the training set (the seed gives no training recipe)")
  batch_size: int = option(64, "training batch size")
  lr: float = option(0.001, "Adam learning rate (Keras' default)")
  between: float = option(0.4, "Dropout layers between the LSTMs", rate=True)
  dropout: float = option(0.25, "input dropout of the 2nd and 3rd LSTM", rate=True)
  recurrent_dropout: float = option(0.25, "recurrent dropout of the 2nd and 3rd LSTM", rate=True)


def run(config: E5Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "digits", config.data_dir)
  data = data._replace(note=f"{data.note}; each image row is one time step")
  record.set_dataset(data, config.dataset)
  emit(f"data: {data.note}")
  model = StackedLSTM(between=config.between, dropout=config.dropout, recurrent_dropout=config.recurrent_dropout,
                      num_classes=data.num_classes)
  entry, _ = train_run("stacked lstm", linen_task(model), init_linen(model, data.x_train), jaxdrop.adam(config.lr), data,
                       config, record, quiet=quiet, emit=emit)
  emit(describe(entry))
  record.add_run(entry)
  record.add_figure(plot_curves(record.out_dir / "curves.png", [entry],
                                title="E5: LSTM(128) - LSTM(64) - LSTM(32) with recurrent dropout"))


EXPERIMENT = Experiment(
    name="e5",
    title="stacked LSTM 128-64-32 with Dropout(0.4) between and dropout/recurrent_dropout 0.25;"
    " images read row by row",
    source="tutorial 002 (Keras LSTM recurrent_dropout)",
    config=E5Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
