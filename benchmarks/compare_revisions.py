"""Dropout speed of this checkout against another git revision, interleaved in one run.

The machine may be shared and noisy, so a before/after comparison is only fair
within one process: this script copies ``jaxdrop/`` as it was at REV into a
temporary package (``jaxdrop_at_rev``), then times forward and forward+backward
dropout of both, round by round, and prints the medians and their ratio. It
also checks that both give bitwise the same values.

Run: python benchmarks/compare_revisions.py REV [--reps N] [--sizes 1M 4M 16M]
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
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    old = package_at(args.rev, Path(tmp))
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s); this checkout"
          f" vs {args.rev}; medians of {args.reps} interleaved rounds, ms")
    print("| size | variant | pass | this | at rev | this ÷ rev | same values |")
    print("|---|---|---|---|---|---|---|")
    key = jax.random.key(0)
    for label in args.sizes:
      size = int(label.rstrip("M")) << 20
      x = jnp.linspace(-1.0, 1.0, size, dtype=jnp.float32).reshape(-1, 1024)
      fns, same = {}, {}
      for variant, kwargs in VARIANTS.items():
        for name, module in (("this", jaxdrop), ("rev", old)):
          f = lambda k, x, m=module, kw=kwargs: m.dropout(k, x, 0.5, **kw)
          fwd = jax.jit(f)
          grad = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(k, x) * x)))
          fns[(variant, "forward", name)] = lambda fwd=fwd: jax.block_until_ready(fwd(key, x))
          fns[(variant, "forward+backward", name)] = lambda grad=grad: jax.block_until_ready(grad(x, key))
        with jax.debug_key_reuse(False):
          same[variant] = bool(jnp.array_equal(jaxdrop.dropout(key, x, 0.5, **kwargs),
                                                old.dropout(key, x, 0.5, **kwargs)))
      with jax.debug_key_reuse(False):
        medians = interleaved_medians(fns, args.reps)
      for variant in VARIANTS:
        for kind in ("forward", "forward+backward"):
          this, rev = medians[(variant, kind, "this")] * 1e3, medians[(variant, kind, "rev")] * 1e3
          print(f"| {label} | {variant} | {kind} | {this:.2f} | {rev:.2f} | {this / rev:.2f} | {same[variant]} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
