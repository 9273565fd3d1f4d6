"""E9: uncertainty you can see: MC dropout on the digits model, against the deterministic network.

E2's MLP (dropout 0.2 / 0.5) is trained on the digits for several seeds. Each
seed's network then predicts the test set twice: deterministically (dropout off,
as usual) and by MC dropout (Gal & Ghahramani, 2016: the mean of the class
probabilities of many passes with dropout on, ``jaxdrop.mc_dropout``). For
each, the record holds the accuracy, the expected calibration error (15 equal
confidence bins) and the mean predictive entropy of the correct and of the wrong
predictions, with their mean, sd and 95 % confidence interval over the seeds,
and the reliability diagram (accuracy against confidence, pooled over the
seeds) is drawn as a PNG.
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
from experiments.calibration import expected_calibration_error, predictive_entropy, reliability
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import MLP
from experiments.plots import plot_curves, plot_reliability
from experiments.records import describe, metric_range, seed_summary
from experiments.runner import Experiment, Part, init_linen, linen_task, train_run

PREDICTORS = ("deterministic", "mc_dropout")


@dataclasses.dataclass
class E9Config(Config):
  epochs: int = option(100, "passes over the training set")
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.5, "SGD learning rate")
  dropout1: float = option(0.2, "drop probability after the first hidden layer", rate=True)
  dropout2: float = option(0.5, "drop probability after the second hidden layer", rate=True)
  seeds: int = option(5, "number of seeds (seed, seed+1, ...), trained together; the CIs are over them")
  mc_samples: int = option(50, "stochastic passes of MC dropout")
  bins: int = option(15, "confidence bins of the calibration error and the reliability diagram")


def make_predictions(model: nn.Module, samples: int):
  """``(params, x, key) -> {predictor: class probabilities}``, compiled once for every seed: deterministic, and
  the MC-dropout mean over ``samples`` passes."""

  def probs(params, x, key):
    return jax.nn.softmax(model.apply({"params": params}, x, train=key is not None,
                                      rngs=None if key is None else {"dropout": key}))

  @jax.jit
  def both(params, x, key):
    mc = jaxdrop.mc_dropout(lambda k, x: probs(params, x, k), key, x, num_samples=samples)
    return {"deterministic": probs(params, x, None), "mc_dropout": mc.mean}

  return lambda params, x, key: jax.tree.map(np.asarray, both(params, x, key))


def uncertainty(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, float]:
  """Accuracy, expected calibration error and the mean predictive entropy of right and wrong predictions."""
  correct = probs.argmax(-1) == labels
  entropy = predictive_entropy(probs)
  return {
      "accuracy": float(correct.mean()),
      "ece": expected_calibration_error(probs, labels, bins),
      "entropy_correct": float(entropy[correct].mean()) if correct.any() else float("nan"),
      "entropy_wrong": float(entropy[~correct].mean()) if (~correct).any() else float("nan"),
  }


def run(config: E9Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "digits", config.data_dir)
  record.set_dataset(data, config.dataset)
  if data.note:
    emit(f"data: {data.note}")
  model = MLP((256, 256), (config.dropout1, config.dropout2), data.num_classes,
              kernel_init=nn.initializers.normal(0.01))
  entry, results = train_run("mlp", linen_task(model), init_linen(model, data.x_train), jaxdrop.sgd(config.lr), data,
                             config, record, quiet=quiet, emit=emit, epochs=config.epochs)
  emit(describe(entry))
  seeds = range(config.seed, config.seed + config.seeds)
  predictions = make_predictions(model, config.mc_samples)
  per_seed, pooled = [], {p: [] for p in PREDICTORS}
  for seed, result in zip(seeds, results, strict=True):
    mc_key = jax.random.fold_in(jax.random.key(seed), 9)  # the MC passes' own stream
    probs = predictions(result.state.params, data.x_test, mc_key)
    per_seed.append({"seed": seed, **{p: uncertainty(probs[p], data.y_test, config.bins) for p in PREDICTORS}})
    for p in PREDICTORS:
      pooled[p].append(probs[p])
  summary = {p: {m: seed_summary([s[p][m] for s in per_seed], metric_range(m)) for m in per_seed[0][p]}
             for p in PREDICTORS}
  labels = np.tile(np.asarray(data.y_test), len(per_seed))
  tables = {p: {k: v.tolist() for k, v in reliability(np.concatenate(pooled[p]), labels, config.bins).items()}
            for p in PREDICTORS}
  entry["uncertainty"] = {"per_seed": per_seed, "summary": summary, "reliability": tables,
                          "mc_samples": config.mc_samples, "bins": config.bins}
  for p in PREDICTORS:
    s = summary[p]
    emit(f"{p}: accuracy {s['accuracy']['mean']:.4f}, ECE {s['ece']['mean']:.4f} (95% CI {s['ece']['ci95'][0]:.4f}.."
         f"{s['ece']['ci95'][1]:.4f}), entropy of right {s['entropy_correct']['mean']:.3f} and wrong"
         f" {s['entropy_wrong']['mean']:.3f} predictions")
  record.add_run(entry)
  record.add_figure(plot_reliability(record.out_dir / "reliability.png",
                                     {"MC dropout": tables["mc_dropout"], "deterministic": tables["deterministic"]},
                                     title=f"E9: reliability on {data.name}, {len(per_seed)} seeds pooled"))
  record.add_figure(plot_curves(record.out_dir / "curves.png", [entry], title="E9: the MLP with dropout"))


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E9: accuracy, calibration error and entropy of both predictors, and the diagram."""
  config = record["config"]
  (run,) = record["runs"]
  result = run["uncertainty"]
  lines = [
      "## E9: uncertainty you can see (MC dropout, beyond the tutorials)",
      "",
      f"E2's MLP with dropout {config['dropout1']}/{config['dropout2']} on {record['dataset']['name']},"
      f" {config['epochs']} epochs, {len(run.get('seeds', [run.get('seed')]))} seeds. Each seed's network predicts"
      " the test set deterministically (dropout off) and by MC dropout (the mean class probabilities of"
      f" {result['mc_samples']} passes with dropout on, `jaxdrop.mc_dropout`). ECE: expected calibration error over"
      f" {result['bins']} equal confidence bins; entropy: the mean predictive entropy (nats) of the right and of"
      " the wrong predictions. Mean ± sd over the seeds, and the 95 % CI of the ECE (Student t, clipped to"
      " [0, 1]).",
      "",
      "| predictor | test acc (mean ± sd) | ECE (mean ± sd) | ECE 95% CI | entropy, right | entropy, wrong |",
      "|---|---|---|---|---|---|",
  ]
  for key, label in (("deterministic", "deterministic"), ("mc_dropout", "MC dropout")):
    s = result["summary"][key]
    ece = s["ece"]
    lines.append(f"| {label} | {s['accuracy']['mean']:.4f} ± {s['accuracy']['sd']:.4f} | {ece['mean']:.4f} ±"
                 f" {ece['sd']:.4f} | {ece['ci95'][0]:.4f}..{ece['ci95'][1]:.4f} | {s['entropy_correct']['mean']:.3f}"
                 f" | {s['entropy_wrong']['mean']:.3f} |")
  lines += ["", "The reliability diagram: accuracy against confidence per bin, the seeds' predictions pooled; below"
            " it, how many predictions fell into each bin (most are confident and right, so the low-confidence"
            " bins rest on few examples).", "",
            "![E9: reliability diagram with bin counts](e9/reliability.png)", "",
            "The training curves of the same networks (the mean over the seeds, a band of one sd; train metrics:"
            " the running mean over the epoch, with dropout on):", "",
            "![E9: training curves](e9/curves.png)", ""]
  return lines


EXPERIMENT = Experiment(
    name="e9",
    title="MC dropout's uncertainty on the digits MLP: calibration error, predictive entropy of right and wrong"
    " predictions and a reliability diagram, against the deterministic network",
    source="beyond the tutorials: Gal & Ghahramani (2016), Guo et al. (2017)",
    config=E9Config,
    run=run,
    part=Part(report_section, options=lambda seeds: {"seeds": seeds}, quick={"epochs": 3, "mc_samples": 4}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
