"""Dropout speed of this checkout against another git revision, interleaved in one run.

The machine may be shared and noisy, so a before/after comparison is only fair
within one process: this script copies ``jaxdrop/`` as it was at REV into a
temporary package (``jaxdrop_at_rev``), then times forward and forward+backward
dropout of both, round by round, and prints the medians and their ratio. It
also checks that both give bitwise the same values. ``--steps`` adds train
steps: a jitted SGD step (``value_and_grad`` and the update) of E2's MLP
(784-256-256-10, dropout 0.2 and 0.5 after the hidden layers) at batch 256
and 1024, with each revision's ``dropout`` and without dropout, and dropout's
overhead over the step without it. ``--attention L ...`` adds the blockwise
attention gradient step of ``benchmarks.attention_long`` (B=2, H=8, d=64,
dropout 0.1, a mask per example and head), causal and not, at those lengths
(3 rounds: a step takes seconds). ``--rounds R`` sets the Philox rounds of
REV's copy to R (``HEAD --rounds 7``: what a cheaper generator would buy; a
measurement only, the copy draws other masks). ``--philox7`` gives this
checkout's side keys of ``jaxdrop.PHILOX7`` (the opt-in 7-round generator:
other masks, so its values are not the same by design) and REV's the default.

Run: python benchmarks/compare_revisions.py REV [--reps N] [--sizes 1M 4M 16M] [--steps]
[--attention 2048 4096] [--rounds R] [--philox7]
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the repository's packages from its root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import jax
import jax.numpy as jnp

import jaxdrop
from benchmarks import attention_long, step_overhead
from experiments.timing import interleaved_medians

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"16-bit (default)": {}, "8-bit": {"mask_bits": 8}, "32-bit": {"mask_bits": 32}}


def package_at(rev: str, folder: Path):
  """``jaxdrop`` as it was at ``rev``, imported as ``jaxdrop_at_rev`` from ``folder``."""
  archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "jaxdrop"], check=True, capture_output=True)
  subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
  (folder / "jaxdrop").rename(folder / "jaxdrop_at_rev")
  for path in (folder / "jaxdrop_at_rev").rglob("*.py"):
    path.write_text(re.sub(r"\bjaxdrop\b(?=[.\s])", "jaxdrop_at_rev", path.read_text()))
  sys.path.insert(0, str(folder))
  return importlib.import_module("jaxdrop_at_rev")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("rev", help="the git revision to compare with, e.g. HEAD~1 or a commit")
  parser.add_argument("--reps", type=int, default=20, help="timed rounds (default 20)")
  parser.add_argument("--sizes", nargs="+", default=["1M", "4M", "16M"], help="elements (default 1M 4M 16M)")
  parser.add_argument("--steps", action="store_true", help="also E2's MLP train steps at batch 256 and 1024")
  parser.add_argument("--attention", nargs="+", type=int, default=[], metavar="L",
                      help="also blockwise attention gradient steps, causal and not, at these lengths")
  parser.add_argument("--rounds", type=int, choices=range(1, 11), metavar="{1..10}",
                      help="Philox rounds of REV's copy (default: as at REV, 10)")
  parser.add_argument("--philox7", action="store_true",
                      help="this checkout's side draws its masks from jaxdrop.PHILOX7 keys (other masks)")
  args = parser.parse_args(argv)
  this_key = step_overhead.as_philox7 if args.philox7 else (lambda key: key)
  with tempfile.TemporaryDirectory() as tmp:
    old = package_at(args.rev, Path(tmp))
    if args.rounds is not None:
      old._bits._ROUNDS = args.rounds  # read when a mask is traced: the copy draws other masks
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s); this checkout"
          f" vs {args.rev}; medians of {args.reps} interleaved rounds, ms")
    print("| size | variant | pass | this | at rev | this ÷ rev | same values |")
    print("|---|---|---|---|---|---|---|")
    key = jax.random.key(0)
    keys = {"this": this_key(key), "rev": key}
    for label in args.sizes:
      size = int(label.rstrip("M")) << 20
      x = jnp.linspace(-1.0, 1.0, size, dtype=jnp.float32).reshape(-1, 1024)
      fns, same = {}, {}
      for variant, kwargs in VARIANTS.items():
        for name, module in (("this", jaxdrop), ("rev", old)):
          f = lambda k, x, m=module, kw=kwargs: m.dropout(k, x, 0.5, **kw)
          fwd = jax.jit(f)
          grad = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(k, x) * x)))
          fns[(variant, "forward", name)] = lambda fwd=fwd, k=keys[name]: jax.block_until_ready(fwd(k, x))
          fns[(variant, "forward+backward", name)] = lambda grad=grad, k=keys[name]: jax.block_until_ready(
              grad(x, k))
        with jax.debug_key_reuse(False):
          same[variant] = bool(jnp.array_equal(jaxdrop.dropout(keys["this"], x, 0.5, **kwargs),
                                                old.dropout(key, x, 0.5, **kwargs)))
      with jax.debug_key_reuse(False):
        medians = interleaved_medians(fns, args.reps)
      for variant in VARIANTS:
        for kind in ("forward", "forward+backward"):
          this, rev = medians[(variant, kind, "this")] * 1e3, medians[(variant, kind, "rev")] * 1e3
          print(f"| {label} | {variant} | {kind} | {this:.2f} | {rev:.2f} | {this / rev:.2f} | {same[variant]} |")
    if args.steps:
      compare_steps(old, args.reps, this_key)
    if args.attention:
      compare_attention(old, args.attention, this_key=this_key)
  return 0


def mlp_step(dropout):
  """E2's MLP SGD step ``(params, key, x, y) -> (params, loss)``, jitted; ``dropout=None``: no dropout."""
  def loss(params, key, x, y):
    keys = jax.random.split(key)
    h = x
    for i, (w, b) in enumerate(params):
      h = h @ w + b[None, :]
      if i < len(params) - 1:
        h = jax.nn.relu(h)
        if dropout is not None:
          h = dropout(keys[i], h, (0.2, 0.5)[i])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], axis=1))

  def step(params, key, x, y):
    value, grads = jax.value_and_grad(loss)(params, key, x, y)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value

  return jax.jit(step)


def compare_steps(old, reps: int, this_key=lambda key: key) -> None:
  """Prints E2's MLP step with this checkout's and ``old``'s dropout and without dropout, interleaved
  (``this_key``: the key this checkout's step gets, from the one ``old``'s gets)."""
  sizes = (784, 256, 256, 10)
  keys = jax.random.split(jax.random.key(1), len(sizes))
  params = [(jax.random.normal(k, (a, b)) * 0.05, jnp.zeros(b)) for k, a, b in zip(keys, sizes, sizes[1:])]
  steps = {"this": mlp_step(jaxdrop.dropout), "rev": mlp_step(old.dropout), "none": mlp_step(None)}
  print()
  print("| E2 MLP batch | this ms | at rev ms | no dropout ms | this overhead | rev overhead | same values |")
  print("|---|---|---|---|---|---|---|")
  key = jax.random.key(2)
  keys = {"this": this_key(key), "rev": key, "none": key}
  for batch in (256, 1024):
    x = jax.random.normal(jax.random.key(3), (batch, 784))
    y = jax.random.randint(jax.random.key(4), (batch,), 0, 10)
    fns = {name: (lambda f=f, k=keys[name]: jax.block_until_ready(f(params, k, x, y))) for name, f in steps.items()}
    with jax.debug_key_reuse(False):
      this_out, rev_out = steps["this"](params, keys["this"], x, y), steps["rev"](params, key, x, y)
      same = all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(this_out), jax.tree.leaves(rev_out)))
      medians = interleaved_medians(fns, reps)
    ms = {name: value * 1e3 for name, value in medians.items()}
    print(f"| {batch} | {ms['this']:.3f} | {ms['rev']:.3f} | {ms['none']:.3f} | {ms['this'] / ms['none'] - 1:+.1%}"
          f" | {ms['rev'] / ms['none'] - 1:+.1%} | {same} |")



def compare_attention(old, lengths, reps: int = 3, this_key=lambda key: key) -> None:
  """Prints ``attention_long``'s blockwise gradient step with this checkout and ``old``, causal and not
  (``this_key`` as in :func:`compare_steps`)."""
  print()
  print("| L | mask | this ms | at rev ms | this ÷ rev | same values |")
  print("|---|---|---|---|---|---|")
  key = jax.random.key(1)
  keys = {"this": this_key(key), "rev": key}
  for length in lengths:
    q, k, v = attention_long._inputs(length, attention_long.HEADS, attention_long.DEPTH, attention_long.BATCH)
    fns, same = {}, {}
    for causal in (True, False):
      steps = {}
      for name, module in (("this", jaxdrop), ("rev", old)):
        fn = attention_long.attention_fn("blockwise", causal, library=module)
        steps[name] = attention_long.gradient_step(fn)
        fns[(causal, name)] = lambda f=steps[name], kk=keys[name]: jax.block_until_ready(f(q, k, v, kk))
      with jax.debug_key_reuse(False):
        same[causal] = all(bool(jnp.array_equal(a, b)) for a, b in
                           zip(steps["this"](q, k, v, keys["this"]), steps["rev"](q, k, v, key), strict=True))
    with jax.debug_key_reuse(False):
      medians = interleaved_medians(fns, reps, warmup=1)  # the values check above ran each step once already
    for causal in (True, False):
      this, rev = medians[(causal, "this")] * 1e3, medians[(causal, "rev")] * 1e3
      print(f"| {length} | {'causal' if causal else 'full'} | {this:.0f} | {rev:.0f} | {this / rev:.2f}"
            f" | {same[causal]} |")
    print(f"| {length} | causal ÷ full | {medians[(True, 'this')] / medians[(False, 'this')]:.3f}"
          f" | {medians[(True, 'rev')] / medians[(False, 'rev')]:.3f} | | |")


if __name__ == "__main__":
  sys.exit(main())
