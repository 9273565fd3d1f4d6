"""E6 (tutorial 002): the source tutorial's two small networks.

* ``mlp``: ``Linear(10, 5) -> Dropout(0.5) -> ReLU -> Linear(5, 2)``, dropout
  before the activation as written, on a real 10-feature, 2-class task (the
  ten "mean" features of scikit-learn's bundled breast cancer set).
* ``convnet``: the MatConvNet CIFAR network with three ``dropout(0.5)``
  layers between conv blocks (padding adapted so that it runs, see
  :class:`~experiments.models.MatConvNet`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
from typing import Any

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import load_dataset, resolve_dataset
from experiments.models import MLP, MatConvNet
from experiments.plots import RUNNING_TRAIN, plot_curves
from experiments.records import describe
from experiments.runner import Experiment, Part, init_linen, linen_task, train_run

VERSIONS = ("mlp", "convnet")
# The MatConvNet network is the slow part on a CPU: reproduce trains it briefly.
CONVNET_EPOCHS = 8


@dataclasses.dataclass
class E6Config(Config):
  epochs: int = option(100, "passes over the training set for the mlp")
  batch_size: int = option(32, "batch size for the mlp")
  lr: float = option(0.05, "SGD learning rate for the mlp")
  dropout: float = option(0.5, "drop probability of every dropout layer", rate=True)
  convnet_epochs: int = option(20, "passes over the training set for the convnet")
  convnet_batch_size: int = option(64, "batch size for the convnet")
  convnet_lr: float = option(0.001, "Adam learning rate for the convnet (plain SGD barely moves this deep net)")
  versions: tuple[str, ...] = option(VERSIONS, "which networks to train", choices=VERSIONS)


def run(config: E6Config, record, emit, quiet: bool) -> None:
  notes = []
  if "mlp" in config.versions:
    data = load_dataset("breast_cancer")
    notes.append(f"mlp: {data.note}")
    model = MLP(hidden=(5,), rates=(config.dropout,), num_classes=2, dropout_first=True)
    entry, _ = train_run("mlp 10-5-2", linen_task(model), init_linen(model, data.x_train),
                         jaxdrop.sgd(config.lr, momentum=0.9), data, config, record, quiet=quiet, emit=emit)
    emit(describe(entry))
    record.add_run(entry)
  if "convnet" in config.versions:
    data = resolve_dataset(config.dataset, "cifar10", config.data_dir)
    notes.append(f"convnet: {data.note}")
    model = MatConvNet(rate=config.dropout, num_classes=data.num_classes)
    tx = jaxdrop.adam(config.convnet_lr)
    entry, _ = train_run("matconvnet", linen_task(model), init_linen(model, data.x_train), tx, data, config, record,
                         quiet=quiet, emit=emit,
                         epochs=config.convnet_epochs, batch_size=config.convnet_batch_size)
    emit(describe(entry))
    record.add_run(entry)
  record.data["dataset"] = {"name": "+".join(n.split(":")[0] for n in notes), "requested": config.dataset,
                            "note": "; ".join(notes)}
  record.add_figure(plot_curves(record.out_dir / "curves.png", record.data["runs"], separate=True,
                                title="E6: tutorial 002's small networks"))


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E6: both networks' final metrics."""
  lines = [
      "## E6: tutorial 002's small networks",
      "",
      f"{record['dataset']['note']}. The seed gives no figures; the convnet trains {record['config']['convnet_epochs']}"
      f" epochs here (`python -m experiments run e6` runs {E6Config().convnet_epochs}).",
      "",
      "| network | train acc | test acc | test loss | epoch path |",
      "|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    lines.append(f"| {r['name']} | {r['final']['train_acc']:.4f} | {r['final']['test_acc']:.4f} |"
                 f" {r['final']['test_loss']:.4f} | {r['execution']['path']} |")
  lines += [
      "",
      f"Train accuracy is the {RUNNING_TRAIN.removeprefix('train (').removesuffix(')')}: the network in training"
      " is thinned by dropout (three dropout(0.5) layers in the convnet), and early in the epoch it is worse"
      " than at its end; test accuracy is measured with dropout off after the epoch."
      + "".join(f" That is why {r['name']}'s test accuracy ({r['final']['test_acc']:.4f}) exceeds its train"
                f" accuracy ({r['final']['train_acc']:.4f})." for r in record["runs"]
                if r["final"]["test_acc"] > r["final"]["train_acc"]),
      "",
      "![E6: the two networks' curves](e6/curves.png)",
      "",
  ]
  return lines


EXPERIMENT = Experiment(
    name="e6",
    title="tutorial 002's small nets: Linear(10,5)-Dropout(0.5)-ReLU-Linear(5,2), and the MatConvNet CIFAR net"
    " with three dropout(0.5) layers",
    source="tutorial 002 (PyTorch and MATLAB dropout code)",
    config=E6Config,
    run=run,
    part=Part(report_section, options=lambda seeds: {"convnet_epochs": CONVNET_EPOCHS},
              quick={"epochs": 2, "convnet_epochs": 1}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
