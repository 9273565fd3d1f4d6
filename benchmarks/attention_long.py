"""Attention dropout at long sequence lengths: time and compiled temporary memory of a gradient step.

A self-attention gradient step (``jax.grad`` of ``sum(out ** 2)`` with respect
to the query, key and value), B=2, H=8, d=64, attention dropout 0.1 with one
mask per example and head (``broadcast_dropout=False``), causal and not, for:

- ``flax dropout``: ``flax.linen.dot_product_attention`` with its dropout;
- ``reference``: ``jaxdrop.attention.dot_product_attention(implementation="reference")``;
- ``blockwise``: the same with ``implementation="blockwise"``, and without
  dropout (``blockwise, no dropout``);
- ``jax.nn``: ``jax.nn.dot_product_attention`` (no dropout), the yardstick.

The blockwise variants alone run at the further lengths ``blockwise_only``
(default 8192 and 16384). Each row gives the compiled temporary memory
(``memory_analysis().temp_size_in_bytes``, from compiling alone: cheap) and,
up to ``time_up_to``, the median step time over ``reps`` runs after one
warm-up run. The variants of a length, both masks, are interleaved round by
round, the blockwise ones in rounds of their own (their ratios are the
dropout's cost and the causal saving): the others take gigabytes at L=4096,
and the call timed after one of them ran 28 % slower in one run here.

Run: ``python -m benchmarks.attention_long [--lengths 1024 2048 4096] [--blockwise-only 8192 16384]
[--reps 3] [--time-up-to 4096] [--quick]``, or as the ``attention_long`` section of
``python -m benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the repository's packages from its root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxdrop
from experiments.timing import interleaved_medians

__all__ = ["VARIANTS", "bench_attention_long", "main", "render", "targets"]

BATCH, HEADS, DEPTH, RATE = 2, 8, 64, 0.1
VARIANTS = ("flax dropout", "reference", "blockwise", "blockwise, no dropout", "jax.nn")
BLOCKWISE = ("blockwise", "blockwise, no dropout")
QUICK = {"lengths": (256, 512), "blockwise_only": (1024,), "reps": 1}


def attention_fn(variant: str, causal: bool, *, library: Any = jaxdrop, **blocks) -> Callable[..., jax.Array]:
  """``(dropout_key, q, k, v) -> out`` of one variant (``library``: the jaxdrop package whose attention the
  jaxdrop variants call, e.g. another revision's copy)."""
  if variant == "jax.nn":
    return lambda key, q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  if variant == "flax dropout":
    def flax_fn(key, q, k, v):
      mask = nn.make_causal_mask(jnp.ones(q.shape[:2])) if causal else None
      return nn.dot_product_attention(q, k, v, mask=mask, dropout_rng=key, dropout_rate=RATE,
                                      broadcast_dropout=False, deterministic=False)
    return flax_fn
  implementation = "reference" if variant == "reference" else "blockwise"
  rate = 0.0 if variant == "blockwise, no dropout" else RATE
  return lambda key, q, k, v: library.attention.dot_product_attention(
      q, k, v, dropout_rng=key, dropout_rate=rate, broadcast_dropout=False, is_causal=causal,
      implementation=implementation, **(blocks if implementation == "blockwise" else {}))


def gradient_step(fn):
  """The jitted gradient of ``sum(fn(...) ** 2)`` with respect to ``q``, ``k`` and ``v``."""
  loss = lambda q, k, v, key: jnp.sum(fn(key, q, k, v).astype(jnp.float32) ** 2)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _inputs(length: int, heads: int, depth: int, batch: int):
  shape = (batch, length, heads, depth)
  return tuple(jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(0), 3))


def bench_attention_long(
    lengths: Sequence[int] = (1024, 2048, 4096),
    reps: int = 3,
    *,
    blockwise_only: Sequence[int] = (8192, 16384),
    time_up_to: int | None = 4096,
    variants: Sequence[str] = VARIANTS,
    causal: Sequence[bool] = (False, True),
    batch: int = BATCH,
    heads: int = HEADS,
    depth: int = DEPTH,
    log: Callable[[str], None] | None = None,
    **blocks: int,
) -> list[dict[str, Any]]:
  """Rows ``{"variant", "length", "causal", "temp_bytes", "ms"}`` for every variant, length and mask.

  Args:
    lengths: the sequence lengths of every variant.
    reps: timed runs per row (after a warm-up run).
    blockwise_only: further lengths for the blockwise variants alone.
    time_up_to: time the rows up to this length only (``ms`` is ``None`` above; ``None``: time every row).
    variants: which of :data:`VARIANTS` to run.
    causal: the masks (non-causal, causal).
    batch: examples per step.
    heads: attention heads.
    depth: features per head.
    log: called with each row's line as it is measured (e.g. ``print``).
    **blocks: ``block_q=`` / ``block_k=`` for the blockwise variants (default: the library's).
  """
  rows = []
  plan = [(n, tuple(variants)) for n in lengths]
  plan += [(n, tuple(v for v in variants if v in BLOCKWISE)) for n in blockwise_only]
  key = jax.random.key(1)
  for length, names in plan:
    q, k, v = _inputs(length, heads, depth, batch)
    timed = time_up_to is None or length <= time_up_to
    cases = [(name, is_causal) for is_causal in causal for name in names]
    compiled = {case: gradient_step(attention_fn(*case, **blocks)).lower(q, k, v, key).compile()
                for case in cases}
    ms: dict[tuple[str, bool], float | None] = dict.fromkeys(cases)
    if timed:
      with jax.debug_key_reuse(False):  # each repetition reuses the key on purpose: the same work
        thunks = {case: functools.partial(_run, fn, (q, k, v, key)) for case, fn in compiled.items()}
        for group in ([c for c in cases if c[0] in BLOCKWISE], [c for c in cases if c[0] not in BLOCKWISE]):
          if group:
            medians = interleaved_medians({case: thunks[case] for case in group}, reps, warmup=1)
            ms.update({case: 1e3 * t for case, t in medians.items()})
    for name, is_causal in cases:
      row = {"variant": name, "length": length, "causal": is_causal, "ms": ms[(name, is_causal)],
             "temp_bytes": int(compiled[(name, is_causal)].memory_analysis().temp_size_in_bytes),
             "reps": reps if timed else 0, **blocks}
      rows.append(row)
      if log is not None:
        log(format_row(row))
  return rows


def _run(fn, args):
  jax.block_until_ready(fn(*args))


def _mib(n: int) -> str:
  return f"{n / 2**20:,.1f}"


def _ms(row: dict[str, Any]) -> str:
  return "-" if row["ms"] is None else f"{row['ms']:,.0f}"


def _cell(row: dict[str, Any] | None) -> str:
  return "-" if row is None else f"{_ms(row)} / {_mib(row['temp_bytes'])}"


def format_row(row: dict[str, Any]) -> str:
  return (f"| {row['length']} | {'causal' if row['causal'] else 'full'} | {row['variant']} |"
          f" {_mib(row['temp_bytes'])} | {_ms(row)} |")


def render(rows: Sequence[dict[str, Any]]) -> str:
  """The rows side by side (a line per length and mask, ``ms / temp MiB`` per variant) and the targets."""
  variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
  lookup = {(r["length"], r["causal"], r["variant"]): r for r in rows}
  out = ["**Self-attention gradient step at long lengths** (B=2, H=8, d=64, attention dropout 0.1, a mask per"
         " example and head; ms per step / compiled temporary MiB; - : not run)", "",
         "| L | mask | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
  for length, is_causal in dict.fromkeys((r["length"], r["causal"]) for r in rows):
    cells = [_cell(lookup.get((length, is_causal, v))) for v in variants]
    out.append(f"| {length} | {'causal' if is_causal else 'full'} | " + " | ".join(cells) + " |")
  out += ["", "| target | measured | met |", "|---|---|---|"]
  out += [f"| {name} | {value} | {'yes' if met else 'no'} |" for name, value, met in targets(rows)]
  return "\n".join(out)


def targets(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, bool]]:
  """``(target, measured, met)`` for each target of the section that the rows can judge."""
  lookup = {(r["length"], r["causal"], r["variant"]): r for r in rows}
  get = lambda n, c, v, field: (lookup.get((n, c, v)) or {}).get(field)
  found = []

  def ratio(name, n, c, a, b, field, limit):
    x, y = get(n, c, a, field), get(n, c, b, field)
    if x is not None and y:
      found.append((name, f"{x / y:.3g}", x / y <= limit))

  for c in (False, True):
    mask = "causal" if c else "full"
    ratio(f"L=4096 {mask}: blockwise temp / flax dropout temp <= 1/8", 4096, c, "blockwise", "flax dropout",
          "temp_bytes", 1 / 8)
    ratio(f"L=4096 {mask}: blockwise temp / blockwise no-dropout temp <= 1.25", 4096, c, "blockwise",
          "blockwise, no dropout", "temp_bytes", 1.25)
    for n in sorted({r["length"] for r in rows if r["length"] >= 2048}):
      ratio(f"L={n} {mask}: blockwise time / flax dropout time <= 1", n, c, "blockwise", "flax dropout", "ms",
            1.0)
      ratio(f"L={n} {mask}: blockwise time / blockwise no-dropout time <= 1.3", n, c, "blockwise",
            "blockwise, no dropout", "ms", 1.3)
  for v in ("blockwise", "blockwise, no dropout"):
    x, y = get(4096, True, v, "ms"), get(4096, False, v, "ms")
    if x is not None and y:
      found.append((f"L=4096 {v}: causal time / full time <= 0.6", f"{x / y:.3g}", x / y <= 0.6))
  for c in (False, True):
    temp = get(16384, c, "blockwise", "temp_bytes")
    if temp is not None:
      found.append((f"L=16384 {'causal' if c else 'full'}: blockwise temp < 2 GiB", f"{_mib(temp)} MiB",
                    temp < 2 * 2**30))
  return found


HEADER = "| L | mask | variant | temp MiB | ms |\n|---|---|---|---|---|"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", type=int, nargs="+", default=None,
                      help="every variant (default 1024 2048 4096)")
  parser.add_argument("--blockwise-only", type=int, nargs="*", default=None,
                      help="blockwise variants alone (default 8192 16384)")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
  parser.add_argument("--reps", type=int, default=None, help="timed runs per row (default 3)")
  parser.add_argument("--time-up-to", type=int, default=4096, help="time rows up to this length (0: all)")
  parser.add_argument("--quick", action="store_true", help="lengths 256 512 (1024 blockwise), one timed run")
  parser.add_argument("--block-q", type=int, default=None)
  parser.add_argument("--block-k", type=int, default=None)
  args = parser.parse_args(argv)
  full = {"lengths": (1024, 2048, 4096), "blockwise_only": (8192, 16384), "reps": 3}
  preset = QUICK if args.quick else full
  lengths = args.lengths or preset["lengths"]
  blockwise_only = preset["blockwise_only"] if args.blockwise_only is None else args.blockwise_only
  reps = args.reps or preset["reps"]
  blocks = {k: v for k, v in (("block_q", args.block_q), ("block_k", args.block_k)) if v is not None}
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; B={BATCH} H={HEADS} d={DEPTH} rate={RATE}"
        f" broadcast_dropout=False; median of {reps} gradient steps")
  print(HEADER)
  rows = bench_attention_long(lengths, reps, blockwise_only=blockwise_only, variants=args.variants,
                              time_up_to=args.time_up_to or None, log=functools.partial(print, flush=True),
                              **blocks)
  print()
  print(render(rows))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
