"""Timing side by side on a shared, noisy machine: every comparison is a ratio taken in one run, with the
variants interleaved round by round and the median kept (E8's step costs, the benchmarks)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["interleaved_medians"]


def interleaved_medians(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds of each thunk, calling them round-robin ``reps`` times after ``warmup`` rounds.

  Thunks whose name mentions torch run in rounds of their own after the
  others: PyTorch's OpenMP threads keep spinning for a while after each op,
  which on a 2-core machine takes the cores from the XLA call timed next.

  Example:
    >>> sorted(interleaved_medians({"a": lambda: None, "b": lambda: None}, reps=3))
    ['a', 'b']
  """
  torch_fns = {name: fn for name, fn in fns.items() if "torch" in str(name).lower()}
  if torch_fns and len(torch_fns) < len(fns):
    jax_fns = {name: fn for name, fn in fns.items() if name not in torch_fns}
    return {**interleaved_medians(jax_fns, reps, warmup), **interleaved_medians(torch_fns, reps, warmup)}
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}
