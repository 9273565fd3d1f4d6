"""E7 (tutorial 004, end): explicit L1 and L2 penalties added to the loss.

As in the seed, ``loss += lam * sum(torch.norm(param, p))`` over every
parameter (biases included), with the plain, non-squared L2 norm, and
``lam = 0.01``. The classifier is E2's MLP with dropout.

The seed's L1 strength is far too strong for this network: every weight is
pulled towards 0 by ``lr * lam`` per step, more than the data's gradient can
hold, and the network predicts one class. The run ``l1_small`` adds a smaller
L1 strength, where L1 visibly thins the weights and the network still learns.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import MLP
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, Part, epochs_for, init_linen, linen_task, train_run
from jaxdrop import training

VERSIONS = ("none", "l1", "l1_small", "l2")


@dataclasses.dataclass
class E7Config(Config):
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.5, "SGD learning rate")
  l1: float = option(0.01, "lambda of the L1 penalty (the seed's)", nonnegative=True)
  l1_small: float = option(1e-4, "lambda of the second L1 run, l1_small (not the seed's)", nonnegative=True)
  l2: float = option(0.01, "lambda of the (non-squared) L2 norm penalty", nonnegative=True)
  dropout1: float = option(0.2, "drop probability after the first hidden layer", rate=True)
  dropout2: float = option(0.5, "drop probability after the second hidden layer", rate=True)
  versions: tuple[str, ...] = option(VERSIONS, "penalties to compare", choices=VERSIONS)


def penalty_for(version: str, config: E7Config):
  if version in ("l1", "l1_small"):
    lam = config.l1 if version == "l1" else config.l1_small
    return lambda p: lam * jaxdrop.l1_penalty(p, mask=jaxdrop.all_params)
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
  start = init_linen(model, data.x_train)(training.run_keys(config.seed)["init"])  # every version's (first seed)
  record.data["initial_l1_norm"] = float(sum(np.abs(np.asarray(w)).sum() for w in jax.tree.leaves(start)))
  for version in config.versions:
    task = linen_task(model, penalty=penalty_for(version, config))
    entry, results = train_run(version, task, init_linen(model, data.x_train), jaxdrop.sgd(config.lr), data, config,
                               record, quiet=quiet, emit=emit, epochs=epochs)
    weights = [np.asarray(w) for w in jax.tree.leaves(results[0].state.params)]  # the first seed's
    entry["l1_norm"] = float(sum(np.abs(w).sum() for w in weights))
    entry["l2_norm_sum"] = float(sum(np.linalg.norm(w.ravel()) for w in weights))
    entry["near_zero_fraction"] = float(sum((np.abs(w) < 1e-3).sum() for w in weights) / sum(w.size for w in weights))
    entry["parameter_count"] = int(sum(w.size for w in weights))
    emit(describe(entry) + f"; sum|w| {entry['l1_norm']:.1f}, sum||w|| {entry['l2_norm_sum']:.2f},"
         f" |w| < 1e-3: {entry['near_zero_fraction']:.1%}")
    record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"],
      title=f"E7: L1 (lambda={config.l1:g}; l1_small: {config.l1_small:g}) and L2 (lambda={config.l2:g}) penalties",
  ))


def _lambda(record: dict[str, Any], version: str) -> str:
  config = record["config"]
  return {"none": "–", "l1": f"{config['l1']:g}", "l1_small": f"{config.get('l1_small', 0):g}",
          "l2": f"{config['l2']:g}"}[version]


def _verdict(record: dict[str, Any]) -> str:
  runs = {r["name"]: r for r in record["runs"]}
  if "none" not in runs:
    return ""
  base = runs["none"]
  parts = [f"{name.upper().replace('_SMALL', ' (small λ)')}: test accuracy {r['final']['test_acc']:.4f} (none:"
           f" {base['final']['test_acc']:.4f}), Σ‖θ‖₁ {r['l1_norm'] / base['l1_norm']:.0%} of the unpenalized"
           f" network's, {r['near_zero_fraction']:.0%} of the weights below 1e-3 (none: {base['near_zero_fraction']:.0%})"
           for name, r in runs.items() if name != "none"]
  return "; ".join(parts) + ". Chance accuracy is 0.10 (ten classes)."


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E7: each penalty's accuracy and weights, and why the seed's L1 collapses."""
  config = record["config"]
  lines = [
      "## E7: explicit L1 and L2 penalties (tutorial 004, end)",
      "",
      f"loss + λ · Σ‖θ‖₁ or + λ · Σ‖θ‖₂ (the plain norm, every parameter including biases, as in the seed; λ ="
      f" {config['l1']:g} as the seed has it) on E2's MLP with dropout; {record['dataset']['note']}. The seed gives"
      " no figures.",
      "",
      "| penalty | λ | train acc | test acc | test loss | Σ‖θ‖₁ | Σ‖θ‖₂ | share of \\|θ\\| < 1e-3 |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    lines.append(f"| {r['name']} | {_lambda(record, r['name'])} | {r['final']['train_acc']:.4f} |"
                 f" {r['final']['test_acc']:.4f} | {r['final']['test_loss']:.4f} | {r['l1_norm']:.1f} |"
                 f" {r['l2_norm_sum']:.2f} | {r['near_zero_fraction']:.1%} |")
  lines += ["", _verdict(record), ""]
  runs = {r["name"]: r for r in record["runs"]}
  if "l1" in runs:
    l1, lam, lr = runs["l1"], config["l1"], config["lr"]
    count, start = l1.get("parameter_count"), record.get("initial_l1_norm")
    dither = f", against {count:,} parameters × {lr * lam / 2:g} = {count * lr * lam / 2:.1f}" if count else ""
    at_start = (f" At the start, λ · Σ|θ| = {lam:g} × {start:.0f} = {lam * start:.1f} is already larger than the"
                " cross-entropy of 2.3 it should merely regularize." if start else "")
    lines += [
        f"Why the seed's L1 run collapses to chance (train loss {l1['final']['train_loss']:.4f}, the ln 10 = 2.3026"
        f" of a uniform guess over ten classes; test accuracy {l1['final']['test_acc']:.4f}): the seed sums λ · |θ|"
        f" over every parameter, so the penalty's gradient is λ · sign(θ) on each of them, and every SGD step"
        f" moves every weight lr · λ = {lr * lam:g} towards 0, whatever it does for the data. The initial weights"
        " are about 0.008 in size (N(0, 0.01²)) and the cross-entropy's gradient on any one weight is far smaller"
        " than λ, so within a few steps all of them dither at about ±lr · λ / 2 around 0 (hence Σ‖θ‖₁ ="
        f" {l1['l1_norm']:.1f}{dither}); the output no longer depends on the input and the network predicts the"
        f" same for every image.{at_start}",
        "",
    ]
  if "l1_small" in runs:
    small, base = runs["l1_small"], runs.get("none")
    versus = (f" (none: {base['near_zero_fraction']:.0%}, test loss {base['final']['test_loss']:.4f})" if base
              else "")
    lines += [
        f"With λ = {config.get('l1_small', 0):g} (run `l1_small`: ours, beside the seed's λ, which stays the"
        f" reference), L1 does what it is for: the network still learns (test accuracy"
        f" {small['final']['test_acc']:.4f}, test loss {small['final']['test_loss']:.4f}) while"
        f" {small['near_zero_fraction']:.0%} of its weights end below 1e-3 in size{versus}.",
        "",
    ]
  lines += ["The figure: train and test loss (log scale) and accuracy of each penalty; the train metrics are"
            " the running mean over the epoch, with dropout on.", "",
            "![E7: losses and accuracies per penalty](e7/curves.png)", ""]
  return lines


EXPERIMENT = Experiment(
    name="e7",
    title="explicit penalties: loss + 0.01 * sum ||w||_1 (and a smaller L1), or + 0.01 * sum ||w||_2, vs none"
    " (E2's MLP)",
    source="tutorial 004, end (L1/L2 regularization in PyTorch)",
    config=E7Config,
    run=run,
    part=Part(report_section, quick={"epochs": 2}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
