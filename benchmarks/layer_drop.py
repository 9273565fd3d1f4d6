"""LayerDrop skips compute: the train step of a scanned 12-block stack at LayerDrop rates 0, 0.25 and 0.5.

The stack is 12 residual MLP blocks (width 256, hidden 1024, GELU), batch 128,
run by :func:`jaxdrop.layer_drop` (``lax.scan`` over the stacked parameters, a
``lax.cond`` per block), and one jitted train step (mean squared error, SGD)
per call. Each call of a rate gets the next of 16 fixed keys, so the kept
blocks vary as in training (on average ``12 * (1 - rate)``). Times are medians
over ``reps`` rounds with the three rates interleaved round by round (one
warm-up round), so a loaded machine slows them alike; ``vs rate 0`` is the
step time over rate 0's, beside the expected ``1 - rate`` of a step whose
cost is all in the blocks.

Run: ``python -m benchmarks.layer_drop [--reps 20] [--quick]``, or as the ``layer_drop`` section of
``python -m benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the repository's packages from its root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax
import jax.numpy as jnp

import jaxdrop
from experiments.timing import interleaved_medians

__all__ = ["RATES", "batch", "bench_layer_drop", "block", "build", "render"]

RATES = (0.0, 0.25, 0.5)
DEPTH = 12
SIZES = {"full": (128, 256, 1024), "tiny": (4, 8, 16)}  # batch, width, hidden
KEYS = 16


def block(params, x):
  w1, w2 = params
  return x + jax.nn.gelu(x @ w1) @ w2


def batch(tiny: bool = False) -> tuple[jax.Array, jax.Array]:
  """The fixed random batch and its target."""
  size, width, _ = SIZES["tiny" if tiny else "full"]
  k1, k2 = jax.random.split(jax.random.key(1))
  return jax.random.normal(k1, (size, width)), jax.random.normal(k2, (size, width))


def build(tiny: bool = False):
  """The stack's parameters, a batch and its target, and the jitted train step ``(params, key, rate) ->
  params``."""
  _, width, hidden = SIZES["tiny" if tiny else "full"]
  k1, k2 = jax.random.split(jax.random.key(0))
  params = (jax.random.normal(k1, (DEPTH, width, hidden)) / width**0.5,
            jax.random.normal(k2, (DEPTH, hidden, width)) / hidden**0.5 * 0.1)
  x, target = batch(tiny)

  @jax.jit
  def step(params, key, rate):
    def loss(p):
      return jnp.mean((jaxdrop.layer_drop(key, block, p, x, rate) - target) ** 2)

    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)

  return params, step


def bench_layer_drop(reps: int = 20, tiny: bool = False) -> list[dict[str, Any]]:
  """One row per rate: ms per train step, its ratio to rate 0's and the expected ``1 - rate``."""
  params, step = build(tiny)
  keys = [jax.random.key(i) for i in range(KEYS)]

  def thunk(rate):
    cycle = itertools.cycle(keys)
    rate_arg = jnp.float32(rate)  # one compiled step for every rate (a traced rate)
    return lambda: jax.block_until_ready(step(params, next(cycle), rate_arg))

  with jax.debug_key_reuse(False):  # the same 16 keys again, on purpose
    medians = interleaved_medians({rate: thunk(rate) for rate in RATES}, reps, warmup=1)
  return [{"rate": rate, "ms": medians[rate] * 1e3, "vs_rate_0": medians[rate] / medians[0.0],
           "expected": 1 - rate} for rate in RATES]


def render(rows: list[dict[str, Any]]) -> str:
  """The Markdown table: each rate's ms per step, side by side with rate 0's."""
  lines = ["| LayerDrop rate | ms per step | vs rate 0 | expected (1 - rate) |", "|---|---|---|---|"]
  lines += [f"| {r['rate']:.2f} | {r['ms']:,.2f} | {r['vs_rate_0']:.2f} | {r['expected']:.2f} |" for r in rows]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.layer_drop", description=__doc__.split("\n")[0])
  parser.add_argument("--reps", type=int, default=20, help="interleaved rounds (the median is kept)")
  parser.add_argument("--quick", action="store_true", help="tiny sizes, two rounds")
  args = parser.parse_args(argv)
  if args.reps < 1:
    parser.error(f"--reps must be a positive integer, got {args.reps}")
  reps = 2 if args.quick else args.reps
  print(f"jax {jax.__version__} on {jax.default_backend()}; a {DEPTH}-block scanned stack's train step, median"
        f" of {reps} interleaved rounds")
  print(render(bench_layer_drop(reps=reps, tiny=args.quick)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
