"""E8: a small Vision Transformer on the digits, regularized the way today's transformers are.

Attention dropout, residual dropout, stochastic depth rising over the blocks and
decoupled weight decay, built twice from the same model definition: with
jaxdrop (key-only attention dropout, ``jaxdrop.adamw`` with the default mask:
no decay on biases, norms or their scales) and with Flax's own dropout and
``optax.adamw`` (which decays every parameter). The record compares their
accuracy over seeds (mean, sd, 95 % confidence interval), the compiled
temporary memory of one train step and its time, measured side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import concurrent.futures
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import ViT
from experiments.errors import ConfigError
from experiments.plots import RUNNING_TRAIN, plot_curves
from experiments.records import describe
from experiments.runner import Experiment, Part, linen_task, train_run
from experiments.timing import interleaved_medians
from jaxdrop import training

VERSIONS = ("jaxdrop", "flax")
# In reproduce, the transformer has two blocks instead of three (compiling it is most of its time) and
# trains fewer epochs, and the step is not compiled and timed on its own (a third of the part's time).
SUITE = {"epochs": 12, "depth": 2, "step_costs": False}
IMAGE_DATASETS = ("auto", "digits", "mnist", "fashion_mnist", "cifar10")


@dataclasses.dataclass
class E8Config(Config):
  epochs: int | None = option(20, "passes over the training set")
  batch_size: int = option(64, "training batch size")
  lr: float = option(3e-3, "AdamW learning rate")
  weight_decay: float = option(0.05, "decoupled weight decay (AdamW's, times the learning rate)", nonnegative=True)
  seeds: int = option(3, "seeds per version (seed, seed+1, ...), for the mean and confidence interval")
  dataset: str = option("auto", "image data set; 'auto' is the bundled 8x8 digits", choices=IMAGE_DATASETS)
  patch: int = option(2, "side of the square patches (must divide the image size)")
  dim: int = option(32, "token width")
  depth: int = option(3, "transformer blocks")
  heads: int = option(4, "attention heads")
  mlp_dim: int = option(64, "hidden units of each block's MLP")
  dropout: float = option(0.1, "drop probability of the residual branches and the MLP", rate=True)
  attention_dropout: float = option(0.1, "drop probability of each attention weight", rate=True)
  drop_path: float = option(0.1, "stochastic depth of the last block (rising linearly from 0)", rate=True)
  versions: tuple[str, ...] = option(VERSIONS, "jaxdrop's dropout and decay, or Flax's and optax.adamw's",
                                     choices=VERSIONS)
  step_costs: bool = option(True, "compile one train step of each version and time them side by side")


def build(version: str, config: E8Config, data):
  """The task, the initializer and the optimizer of one version."""
  model = ViT(patch=config.patch, dim=config.dim, depth=config.depth, heads=config.heads, mlp_dim=config.mlp_dim,
              num_classes=data.num_classes, dropout=config.dropout, attention_dropout=config.attention_dropout,
              drop_path=config.drop_path, impl=version)
  if version == "jaxdrop":
    tx = jaxdrop.adamw(config.lr, weight_decay=config.weight_decay)  # biases, norms and scales undecayed
  else:
    tx = optax.adamw(config.lr, weight_decay=config.weight_decay)  # every parameter decayed
  return linen_task(model), lambda key: model.init(key, data.x_train[:1], train=False)["params"], tx


def step_costs(steps, data, batch_size: int, reps: int = 10) -> dict[str, dict[str, float]]:
  """Compiled temporary memory and median time of one train step of each version, timed side by side."""
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  indices, weights = training.batch_plan(None, len(data.y_train), batch_size)
  key = training.run_keys(0)["dropout"]
  lowered, states = {}, {}
  for version, (task, init, tx) in steps.items():
    states[version] = training.TrainState.create(apply_fn=task.apply, params=init(jax.random.key(0)), tx=tx)
    lowered[version] = jax.jit(training.make_train_step(task)).lower(states[version], x, y, indices[0], weights[0],
                                                                   key)
  with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:  # XLA compiles on the other core meanwhile
    compiled = dict(zip(lowered, pool.map(lambda program: program.compile(), lowered.values())))
  calls = {v: (lambda c=c, s=states[v]: jax.block_until_ready(c(s, x, y, indices[0], weights[0], key)))
           for v, c in compiled.items()}
  with jax.debug_key_reuse(False):  # the same step, repeated on purpose
    medians = interleaved_medians(calls, reps)
  return {v: {"step_ms": medians[v] * 1e3, "temp_mib": compiled[v].memory_analysis().temp_size_in_bytes / 2**20}
          for v in steps}


def run(config: E8Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "digits", config.data_dir)
  record.set_dataset(data, config.dataset)
  if data.x_train.ndim != 4 or data.x_train.shape[1] % config.patch or data.x_train.shape[2] % config.patch:
    raise ConfigError(f"--patch {config.patch} must divide the {data.name} images' size {data.x_train.shape[1:3]}.")
  built = {version: build(version, config, data) for version in config.versions}
  costs = step_costs(built, data, config.batch_size) if config.step_costs else {}
  for version, (task, init, tx) in built.items():
    entry, _ = train_run(version, task, init, tx, data, config, record, quiet=quiet, emit=emit)
    line = describe(entry)
    if version in costs:
      entry["cost"] = costs[version]
      line += f"; one step {costs[version]['step_ms']:.1f} ms, {costs[version]['temp_mib']:.1f} MiB compiled temporary memory"
    emit(line)
    record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"],
      title=f"E8: ViT on {data.name}, jaxdrop vs Flax's dropout + optax.adamw",
  ))


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E8: accuracy over seeds, one step's time and memory, jaxdrop against Flax."""
  config, defaults = record["config"], E8Config()
  lines = [
      "## E8: a Vision Transformer regularized as transformers are (beyond the tutorials)",
      "",
      f"{record['dataset']['note']}; {config['patch']}x{config['patch']} patches, {config['depth']} pre-norm"
      f" blocks of width {config['dim']} with {config['heads']} heads, attention dropout"
      f" {config['attention_dropout']}, residual dropout {config['dropout']}, stochastic depth rising to"
      f" {config['drop_path']}, AdamW (lr {config['lr']:g}, decay {config['weight_decay']:g}), batch"
      f" {config['batch_size']}, {config['epochs']} epochs here (`python -m experiments run e8` runs"
      f" {defaults.epochs} epochs of {defaults.depth} blocks). The same model,"
      " built with jaxdrop (key-only attention dropout; `jaxdrop.adamw`, whose default mask leaves biases and norm"
      " scales undecayed) and with Flax's own dropout and `optax.adamw` (every parameter decayed). "
      + ("Step time and compiled temporary memory are of one train step (batch as above), timed side by side."
         if config.get("step_costs", True) else "The step's time and memory are not measured here"
         " (`python -m experiments run e8` measures them)."),
      "",
      "| version | test acc (mean ± sd) | 95% CI | train acc | one step (ms) | compiled temp memory (MiB) |",
      "|---|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    acc = r["summary"]["test_acc"] if "summary" in r else {"mean": r["final"]["test_acc"], "sd": 0.0,
                                                            "ci95": [r["final"]["test_acc"]] * 2}
    cost = (f"{r['cost']['step_ms']:.1f} | {r['cost']['temp_mib']:.1f}" if "cost" in r else
            "not measured here | not measured here")
    lines.append(f"| {r['name']} | {acc['mean']:.4f} ± {acc['sd']:.4f} | {acc['ci95'][0]:.4f}..{acc['ci95'][1]:.4f} |"
                 f" {r['final']['train_acc']:.4f} | {cost} |")
  lines += [
      "",
      f"Train accuracy is the {RUNNING_TRAIN.removeprefix('train (').removesuffix(')')} (and stochastic depth),"
      " of a network that improves during the epoch; test accuracy is measured after it with dropout off."
      + (" That is why test accuracy is the higher one here." if any(
          r["final"]["test_acc"] > r["final"]["train_acc"] for r in record["runs"]) else ""),
      "",
      "![E8: losses and accuracies of both versions](e8/curves.png)",
      "",
  ]
  return lines


EXPERIMENT = Experiment(
    name="e8",
    title="Vision Transformer on the digits' 2x2 patches: attention dropout, residual dropout, stochastic depth,"
    " AdamW; jaxdrop against Flax's dropout and optax.adamw",
    source="beyond the tutorials: how today's transformers are regularized",
    config=E8Config,
    run=run,
    part=Part(report_section, options=lambda seeds: dict(SUITE),
              quick={"epochs": 2, "seeds": 2, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16,
                     "step_costs": True}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))
