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

import jax
import jax.numpy as jnp
import optax

import jaxdrop
from experiments import cli
from experiments.config import Config, option
from experiments.data import resolve_dataset
from experiments.models import ViT
from experiments.plots import plot_curves
from experiments.records import describe
from experiments.runner import Experiment, linen_task, train_run
from jaxdrop import training
from jaxdrop.errors import ConfigError

VERSIONS = ("jaxdrop", "flax")
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
  from benchmarks.bench import interleaved_medians

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
  costs = step_costs(built, data, config.batch_size)
  for version, (task, init, tx) in built.items():
    entry, _ = train_run(version, task, init, tx, data, config, record, quiet=quiet, emit=emit)
    entry["cost"] = costs[version]
    emit(describe(entry) + f"; one step {costs[version]['step_ms']:.1f} ms, {costs[version]['temp_mib']:.1f} MiB"
         " compiled temporary memory")
    record.add_run(entry)
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"], ("train_loss", "train_acc", "test_acc"), ylim=(0, 1),
      title=f"E8: ViT on {data.name}, jaxdrop vs Flax's dropout + optax.adamw",
  ))


EXPERIMENT = Experiment(
    name="e8",
    title="Vision Transformer on the digits' 2x2 patches: attention dropout, residual dropout, stochastic depth,"
    " AdamW; jaxdrop against Flax's dropout and optax.adamw",
    source="beyond the tutorials: how today's transformers are regularized",
    config=E8Config,
    run=run,
)


if __name__ == "__main__":
  sys.exit(cli.main(["run", "e8", *sys.argv[1:]]))
