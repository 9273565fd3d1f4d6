"""E12: dropout against the size of the training set (Srivastava et al., 2014, JMLR, Figure 10), on real MNIST.

The paper trained the same network with and without dropout on MNIST subsets of
100 to 10,000 images and found that dropout gives no gain on the smallest sets
(the network over-fits anyway) and a growing gain from about 1,000 images on. Here:
nested, class-balanced subsets of ``mnist_5k``'s 4,000 training images (100, 500,
1,000, 2,000, 4,000), tested on its held-out 1,000; an MLP 784-512-512-10 (ReLU)
with the paper's rates, 0.2 on the inputs and 0.5 in the hidden layers, against
the same MLP without dropout; SGD with momentum, the same number of steps for
every size. Each size trains both variants and every seed in one
``jaxdrop.training.fit_sweep`` (the rates are traced). The record gives the test
error of each size and variant over the seeds (mean, sd, 95 % CI), the gain of
dropout with its CI, and ``size.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
import math
from typing import Any

import jax
import numpy as np

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import load_dataset
from experiments.errors import ConfigError
from experiments.plots import plot_intervals
from experiments.records import reduced_options, seed_summary, seeds_entry
from experiments.runner import Experiment, Part
from jaxdrop import training

VARIANTS = ("no dropout", "dropout")  # the grid's two points: rates 0, and --input-rate / --hidden-rate
# In reproduce (its 4-minute budget): three of the sizes, a narrower MLP, fewer steps and two seeds; `python -m
# experiments run e12` runs the full form (see the section).
SUITE = {"sizes": (100, 1000, 4000), "hidden": 64, "steps": 200, "seeds": 2}


@dataclasses.dataclass
class E12Config(Config):
  sizes: tuple[int, ...] = option((100, 500, 1000, 2000, 4000), "training-set sizes (nested subsets of mnist_5k's"
                                  " 4,000 training images, 10 classes alike)")
  hidden: int = option(512, "units of each of the two hidden layers")
  input_rate: float = option(0.2, "drop probability of the inputs (dropout variant)", rate=True)
  hidden_rate: float = option(0.5, "drop probability after each hidden layer (dropout variant)", rate=True)
  steps: int = option(1500, "optimizer steps of every run, whatever its size (rounded up to whole epochs)")
  batch_size: int = option(100, "training batch size (a smaller set's batch is the whole set)")
  lr: float = option(0.05, "SGD learning rate (momentum 0.9)")
  seeds: int = option(3, "seeds per size and variant, trained together; the CIs are over them")

  def validate(self) -> None:
    super().validate()
    for name, value in (("checkpoint_every", self.checkpoint_every), ("devices", self.devices - 1)):
      if value:
        raise ConfigError(f"--{name.replace('_', '-')} is not supported by e12 (each size trains in one"
                          " compiled fit_sweep); leave it at its default.")
    if self.resume or self.batch_invariant or self.epochs is not None or self.path != "auto":
      raise ConfigError("--resume, --batch-invariant, --epochs and --path are not supported by e12 (each size"
                        " trains --steps steps in one compiled fit_sweep); leave them at their defaults.")
    if self.dataset not in ("auto", "mnist_5k"):
      raise ConfigError(f"--dataset {self.dataset}: e12 runs on mnist_5k's nested subsets only; leave --dataset"
                        " at auto.")
    if not self.sizes or any(isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= 4000 or n % 10
                             for n in self.sizes):
      raise ConfigError(f"--sizes must be multiples of 10 in 10..4000 (class-balanced subsets of the 4,000"
                        f" training images), got {self.sizes!r}.")


def nested_subsets(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """An order of the training images whose every prefix of ``10 k`` images holds ``k`` of each class.

  Example:
    >>> order = nested_subsets(np.repeat(np.arange(10), 3))
    >>> sorted(np.repeat(np.arange(10), 3)[order[:10]].tolist())
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  """
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
  depth = min(len(p) for p in per_class)
  return np.stack([p[:depth] for p in per_class], axis=1).reshape(-1)  # round robin over the classes


def _task_for(h):
  def apply(params, x, train, key):
    x = x.reshape((x.shape[0], -1))
    if train:
      x = jaxdrop.dropout(jax.random.fold_in(key, 0), x, h["input_rate"])
    for i in (1, 2):
      x = jax.nn.relu(x @ params[f"W{i}"] + params[f"b{i}"][None])
      if train:
        x = jaxdrop.dropout(jax.random.fold_in(key, i), x, h["hidden_rate"])
    return x @ params["W3"] + params["b3"][None]

  return training.Task(apply, training.cross_entropy)


def _init(hidden: int):
  def init(key):
    sizes = (784, hidden, hidden, 10)
    keys = jax.random.split(key, 3)
    params = {}
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True), start=1):
      params[f"W{i}"] = jax.random.normal(k, (fan_in, fan_out)) * np.sqrt(2.0 / fan_in)  # He init (ReLU)
      params[f"b{i}"] = jax.numpy.zeros((fan_out,))
    return params

  return init


def run(config: E12Config, record, emit, quiet: bool) -> None:
  data = load_dataset("mnist_5k")
  record.set_dataset(data, "mnist_5k")
  emit(f"data: {data.note}")
  order = nested_subsets(np.asarray(data.y_train))
  seeds = list(range(config.seed, config.seed + config.seeds))
  points = {"input_rate": [0.0, config.input_rate], "hidden_rate": [0.0, config.hidden_rate]}
  tx_for = lambda h: jaxdrop.sgd(config.lr, momentum=0.9)  # noqa: E731
  table = []
  for size in sorted(config.sizes):
    batch = min(config.batch_size, size)
    epochs = math.ceil(config.steps / math.ceil(size / batch))
    options = training.FitOptions(epochs=epochs, batch_size=batch, eval_every=epochs, quiet=True,
                                  mask_generator=config.mask_generator)
    splits = (order[:size][None], np.arange(len(data.y_test))[None])
    results = training.fit_sweep(_task_for, _init(config.hidden), tx_for, data, options, hparams=points,
                                 seeds=seeds, splits=splits)
    row = {"size": size, "epochs": epochs, "batch_size": batch}
    for v, label in enumerate(VARIANTS):
      runs = results[v * len(seeds):(v + 1) * len(seeds)]
      entries = [_entry(f"{label}, {size} images", r, epochs * math.ceil(size / batch)) for r in runs]
      record.add_run(seeds_entry(f"{label}, {size} images", seeds, entries))
      row[label] = seed_summary([1 - e["final"]["test_acc"] for e in entries], (0.0, 1.0))
    gains = [1 - a.history["test_acc"][-1] - (1 - b.history["test_acc"][-1])
             for a, b in zip(results[:len(seeds)], results[len(seeds):], strict=True)]
    row["gain"] = seed_summary(gains, (-1.0, 1.0))  # test error without dropout - with, paired by seed
    table.append(row)
    emit(f"{size} images: test error {row['no dropout']['mean']:.4f} without dropout,"
         f" {row['dropout']['mean']:.4f} with; gain {row['gain']['mean']:+.4f}"
         f" (95% CI {row['gain']['ci95'][0]:+.4f}..{row['gain']['ci95'][1]:+.4f})")
  record.data["sizes"] = table
  record.data["conclusion"] = conclusion(table)
  emit(record.data["conclusion"])
  record.add_figure(plot_intervals(record.out_dir / "size.png", [row["size"] for row in table],
                                   {label: [row[label] for row in table] for label in VARIANTS},
                                   xlabel="training images", ylabel="test error on the held-out 1,000", log_x=True,
                                   title=f"E12: dropout against data-set size (mnist_5k, {len(seeds)} seeds, 95% CI)"))


def _entry(name: str, result: training.SweepResult, steps: int) -> dict[str, Any]:
  history = result.history
  return {"name": name, "history": history, "final": {k: v[-1] for k, v in history.items() if k != "epoch"},
          "param_sha256": training.param_sha256(result.params), "steps": steps, "seed": result.config["seed"],
          "execution": {"path": "fit_sweep", "reason": "every seed and variant of a size in one program"}}


def conclusion(table: list[dict[str, Any]]) -> str:
  """Whether the paper's result holds: no gain below 1,000 images (its 100 and 500), a gain from 1,000 on.

  Srivastava et al. (2014), section 7.4: "For extremely small data sets (100, 500), dropout does not give any
  improvements ... As the size of the data set is increased, the gain from doing dropout increases up to a
  point and then declines" (their sizes reach 50,000; ours 4,000). A gain counts where its 95 % CI over the
  seeds is above 0.
  """
  small = [row for row in table if row["size"] < 1000]
  large = [row for row in table if row["size"] >= 1000]
  helps = lambda row: row["gain"]["ci95"][0] > 0  # noqa: E731
  no_gain_small = bool(small) and not any(helps(row) for row in small)
  gain_large = bool(large) and all(helps(row) for row in large)
  verdict = ("holds" if no_gain_small and gain_large else "holds in part" if no_gain_small or gain_large
             else "does not hold")
  parts = [f"below 1,000 images {'no' if no_gain_small else 'a'} gain"
           + ("" if no_gain_small else " at " + ", ".join("{:,}".format(r["size"]) for r in small if helps(r))),
           f"from 1,000 on {'a gain at every size' if gain_large else 'no gain at some size'}"]
  gains = "; ".join("{:,}: {:+.4f} (95% CI {:+.4f}..{:+.4f})".format(
      r["size"], r["gain"]["mean"], *r["gain"]["ci95"]) for r in table)
  return (f"The paper's result {verdict} here ({parts[0]}, {parts[1]}). Dropout's gain in test error by"
          f" training-set size: {gains}.")


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E12: test error by training-set size with and without dropout, the verdict, the
  figure."""
  config = record["config"]
  reduced = reduced_options(config, E12Config(), SUITE)
  lines = [
      "## E12: dropout against training-set size, after Srivastava et al. (2014, Figure 10)",
      "",
      f"Nested, class-balanced subsets of mnist_5k's 4,000 training images, tested on its held-out 1,000; an MLP"
      f" 784-{config['hidden']}-{config['hidden']}-10 with dropout {config['input_rate']} on the inputs and"
      f" {config['hidden_rate']} in the hidden layers against the same MLP without, SGD with momentum,"
      f" {config['steps']} steps at every size, {config['seeds']} seeds (both variants and every seed of a size"
      " in one `fit_sweep`)."
      + (f" Reduced to stay short: {', '.join(reduced)}; `python -m experiments run e12` runs the full form."
         if reduced else ""),
      "",
      "| training images | test error, no dropout | test error, dropout | gain (95% CI) |",
      "|---|---|---|---|",
  ]
  for row in record["sizes"]:
    gain = row["gain"]
    lines.append(f"| {row['size']:,} | {row['no dropout']['mean']:.4f} ± {row['no dropout']['sd']:.4f} |"
                 f" {row['dropout']['mean']:.4f} ± {row['dropout']['sd']:.4f} | {gain['mean']:+.4f}"
                 f" ({gain['ci95'][0]:+.4f}..{gain['ci95'][1]:+.4f}) |")
  lines += ["", "Mean ± sd over the seeds; the gain is the test error without dropout minus with, paired by seed.",
            record["conclusion"], "", "![E12: test error against training-set size](e12/size.png)", ""]
  return lines


EXPERIMENT = Experiment(
    name="e12",
    title="dropout against training-set size on real MNIST (100 to 4,000 images): test error with and"
    " without dropout, with CIs over seeds",
    source="beyond the tutorials: Srivastava et al. (2014, JMLR), Figure 10",
    config=E12Config,
    run=run,
    part=Part(report_section, options=lambda seeds: dict(SUITE), quick={"sizes": (20, 40), "steps": 4, "hidden": 8}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
