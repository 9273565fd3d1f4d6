"""What dropout costs inside real train steps: each model without dropout, with jaxdrop's and with Flax's.

For each model the same network is built three ways: ``none`` (every rate 0:
no dropout at all), ``jaxdrop`` (``jaxdrop.linen`` layers, jaxdrop's attention
dropout) and ``flax`` (``flax.linen.Dropout``, Flax's attention dropout), and
a fourth, ``philox7``, is ``jaxdrop`` given a dropout key of
``jaxdrop.PHILOX7`` (the opt-in 7-round generator: other masks). All are
trained by the engine's step (:func:`jaxdrop.training.make_train_step`, SGD,
fixed random data) on both of the engine's paths:

- ``loop``: the jitted step, called once per batch from Python;
- ``scan``: the engine's epoch (:func:`jaxdrop.training.make_train_epoch`,
  ``path="scan"``), ``steps`` batches in one compiled ``lax.scan``, per step.

Times are medians over ``reps`` rounds with the variants interleaved
round by round (one warm-up call each), so a loaded machine slows them alike;
the overhead is ``variant / none - 1``. The memory is the compiled temporary
memory of one ``loop`` step. Models:

- ``e2_mlp_256``, ``e2_mlp_1024``: E2's MLP 784-256-256-10, dropout 0.2/0.5, batch 256 and 1024;
- ``e4_cnn``: E4's CNN on CIFAR-10's shape (32x32x3), dropout 0.25 twice, batch 64;
- ``e8_vit``: E8's ViT (3 blocks of width 32 on 8x8 images in 2x2 patches; attention, residual dropout
  and stochastic depth 0.1), batch 64;
- ``encoder``: a 12-block pre-norm transformer encoder under ``nn.scan`` (L=256, d=256, 4 heads, MLP
  1024, attention and residual dropout 0.1), batch 2.

Run: ``python -m benchmarks.step_overhead [--models ...] [--reps 5] [--steps 8] [--quick]``, or as the
``step_overhead`` section of ``python -m benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the repository's packages from its root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxdrop
from experiments.models import CNN, MLP, ViT, ViTBlock
from experiments.runner import linen_task
from experiments.timing import interleaved_medians
from jaxdrop import training
from jaxdrop import linen as jdl

__all__ = ["MODELS", "VARIANTS", "as_philox7", "bench_step_overhead", "build", "dropout_key", "main", "render"]

VARIANTS = ("none", "jaxdrop", "flax", "philox7")
MODELS = ("e2_mlp_256", "e2_mlp_1024", "e4_cnn", "e8_vit", "encoder")
QUICK = {"models": ("e2_mlp_256", "e8_vit"), "reps": 1, "steps": 2, "tiny": True}


class _EncoderBlock(nn.Module):
  """One :class:`~experiments.models.ViTBlock`, in ``nn.scan``'s ``(carry, x) -> (carry, y)`` form."""

  heads: int
  mlp_dim: int
  rate: float
  impl: str
  train: bool

  @nn.compact
  def __call__(self, x, _):
    return ViTBlock(self.heads, self.mlp_dim, self.rate, self.rate, 0.0, self.impl)(x, self.train), None


class Encoder(nn.Module):
  """``depth`` pre-norm transformer blocks under ``nn.scan`` over tokens ``(B, L, d)``, a norm, mean pooling
  and a linear head."""

  depth: int = 12
  heads: int = 4
  mlp_dim: int = 1024
  rate: float = 0.1
  impl: str = "jaxdrop"
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    blocks = nn.scan(_EncoderBlock, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                     length=self.depth)
    x, _ = blocks(self.heads, self.mlp_dim, self.rate, self.impl, train, name="blocks")(x, None)
    return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(axis=1))


def _layer(variant: str):
  return {"none": None, "jaxdrop": jdl.Dropout, "flax": nn.Dropout, "philox7": jdl.Dropout}[variant]


def build(model: str, variant: str, tiny: bool = False) -> tuple[nn.Module, tuple[int, ...], int]:
  """``(module, input shape of one batch, batch size)`` of ``model`` built as ``variant``; ``tiny`` shrinks
  the inputs and widths (tests)."""
  rate = lambda r: 0.0 if variant == "none" else r  # noqa: E731
  impl = "flax" if variant == "flax" else "jaxdrop"  # philox7 is jaxdrop's network (another key)
  if model.startswith("e2_mlp_"):
    batch = 16 if tiny else int(model.removeprefix("e2_mlp_"))
    layer = _layer(variant)
    rates = (0.0, 0.0) if layer is None else (0.2, 0.5)
    return MLP((32, 32) if tiny else (256, 256), rates, dropout_layer=layer), (batch, 784), batch
  if model == "e4_cnn":
    batch = 4 if tiny else 64
    return CNN(rate=rate(0.25), dropout_layer=_layer(variant)), (batch, 32, 32, 3), batch
  if model == "e8_vit":
    batch = 8 if tiny else 64
    return ViT(patch=2, dim=16 if tiny else 32, depth=1 if tiny else 3, heads=4, mlp_dim=64, dropout=rate(0.1),
               attention_dropout=rate(0.1), drop_path=rate(0.1), impl=impl), (batch, 8, 8, 1), batch
  if model == "encoder":
    length, dim = (16, 32) if tiny else (256, 256)
    return (Encoder(depth=2 if tiny else 12, mlp_dim=4 * dim, rate=rate(0.1), impl=impl), (2, length, dim), 2)
  raise ValueError(f"model: {model!r} is not one of {MODELS}.")


def as_philox7(key: jax.Array) -> jax.Array:
  """The key's words as a key of ``jaxdrop.PHILOX7`` (the opt-in 7-round generator: other masks)."""
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=jaxdrop.PHILOX7)


def dropout_key(variant: str) -> jax.Array:
  """The steps' dropout key: the engine's for seed 0, as a ``jaxdrop.PHILOX7`` key for ``philox7``."""
  key = training.run_keys(0)["dropout"]
  return as_philox7(key) if variant == "philox7" else key


def _runs(model: str, variant: str, steps: int, tiny: bool) -> tuple[dict[str, Callable[[], Any]], int]:
  """``{path: thunk}`` (one loop step; ``steps`` scanned steps) and the loop step's compiled temp bytes."""
  module, shape, batch = build(model, variant, tiny)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((steps * batch, *shape[1:]), dtype=np.float32))
  y = jnp.asarray(rng.integers(0, 10, steps * batch).astype(np.int32))
  task = linen_task(module)
  params = module.init(jax.random.key(0), x[:1], train=False)["params"]
  state = training.TrainState.create(apply_fn=task.apply, params=params, tx=jaxdrop.sgd(1e-3))
  key = dropout_key(variant)
  indices, weights = training.batch_plan(None, steps * batch, batch)
  step = jax.jit(training.make_train_step(task)).lower(state, x, y, indices[0], weights[0], key).compile()
  epoch = training.make_train_epoch(task, batch, "scan")
  held = {"state": jax.tree.map(jnp.copy, state)}

  def scanned():  # the epoch donates its state: carry it on from call to call
    held["state"], metrics = epoch(held["state"], x, y, None, key)
    jax.block_until_ready(metrics)

  thunks = {"loop": lambda: jax.block_until_ready(step(state, x, y, indices[0], weights[0], key)),
            "scan": scanned}
  return thunks, int(step.memory_analysis().temp_size_in_bytes)


def bench_step_overhead(models: Sequence[str] = MODELS, reps: int = 5, steps: int = 8,
                        tiny: bool = False) -> list[dict[str, Any]]:
  """One row per model, path and variant: ms per step, overhead against ``none`` and compiled temp MiB."""
  rows = []
  for model in models:
    thunks, memory = {}, {}
    for variant in VARIANTS:
      runs, memory[variant] = _runs(model, variant, steps, tiny)
      thunks.update({(path, variant): fn for path, fn in runs.items()})
    with jax.debug_key_reuse(False):  # the same step, repeated on purpose
      medians = interleaved_medians(thunks, reps, warmup=1)
    for path in ("loop", "scan"):
      per_step = {v: medians[(path, v)] / (1 if path == "loop" else steps) for v in VARIANTS}
      for v in VARIANTS:
        rows.append({"model": model, "path": path, "variant": v, "ms": per_step[v] * 1e3,
                     "overhead_pct": 100 * (per_step[v] / per_step["none"] - 1),
                     "temp_mib": memory[v] / 2**20, "temp_vs_none": memory[v] / memory["none"]})
  return rows


def render(rows: list[dict[str, Any]]) -> str:
  """The Markdown table: per model and path, each variant's ms per step, overhead and memory."""
  lines = ["| model | path | none (ms) | jaxdrop (ms) | jaxdrop overhead | flax (ms) | flax overhead |"
           " jaxdrop / flax overhead | PHILOX7 key (ms) | PHILOX7 overhead |"
           " temp MiB none / jaxdrop / flax / PHILOX7 |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  by = {(r["model"], r["path"], r["variant"]): r for r in rows}
  for model, path in dict.fromkeys((r["model"], r["path"]) for r in rows):
    n, j, f, s = (by[(model, path, v)] for v in VARIANTS)
    ratio = j["overhead_pct"] / f["overhead_pct"] if f["overhead_pct"] > 0 else float("nan")
    lines.append(f"| {model} | {path} | {n['ms']:,.2f} | {j['ms']:,.2f} | {j['overhead_pct']:+.1f} % |"
                 f" {f['ms']:,.2f} | {f['overhead_pct']:+.1f} % | {ratio:.2f} |"
                 f" {s['ms']:,.2f} | {s['overhead_pct']:+.1f} % |"
                 f" {n['temp_mib']:,.2f} / {j['temp_mib']:,.2f} / {f['temp_mib']:,.2f} / {s['temp_mib']:,.2f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.step_overhead", description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="what to train")
  parser.add_argument("--reps", type=int, default=5, help="interleaved rounds (the median is kept)")
  parser.add_argument("--steps", type=int, default=8, help="steps of the scanned epoch")
  parser.add_argument("--quick", action="store_true", help="two small models, tiny sizes, one round")
  args = parser.parse_args(argv)
  if args.reps < 1 or args.steps < 1:
    parser.error(f"--reps and --steps must be positive integers, got {args.reps} and {args.steps}")
  options = dict(QUICK) if args.quick else {"models": args.models, "reps": args.reps, "steps": args.steps}
  print(f"jax {jax.__version__} on {jax.default_backend()}; train steps (SGD), median of {options['reps']}"
        " interleaved rounds")
  print(render(bench_step_overhead(**options)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
