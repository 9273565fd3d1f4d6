"""PNG figures of training curves, in the style of d2l's ``Animator``.

Drawn on a ``matplotlib.figure.Figure`` with its own Agg canvas: no pyplot, so
importing this module leaves the user's matplotlib backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_curves", "plot_reliability"]


def plot_curves(
    path: str | os.PathLike,
    runs: Sequence[dict[str, Any]],
    series: Sequence[str],
    *,
    log_y: bool = False,
    ylim: tuple[float, float] | None = None,
    title: str = "",
) -> str:
  """One panel per run, one line per series against the epoch; saved as a PNG.

  Args:
    path: output file.
    runs: dicts with a ``name`` and a ``history`` (``epoch`` and the series).
    series: history keys to draw, e.g. ``("train_loss", "train_acc", "test_acc")``.
    log_y: log-scale y axis (E3's losses).
    ylim: fixed y range, e.g. ``(0, 1)`` for d2l's figures.
    title: figure title.

  Returns:
    ``path`` as a string.
  """
  n = len(runs)
  cols = 2 if n == 4 else min(n, 3)
  rows = -(-n // cols)
  fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, run in zip(axes.flat, runs):
    history = run["history"]
    for name in series:
      if name in history:
        ax.plot(history["epoch"], history[name], marker="." if len(history["epoch"]) < 30 else None,
                label=name.replace("_", " "))
    ax.set_title(run["name"], fontsize=10)
    ax.set_xlabel("epoch")
    if log_y:
      ax.set_yscale("log")
    if ylim:
      ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return str(path)


def plot_reliability(
    path: str | os.PathLike,
    tables: dict[str, dict[str, Any]],
    *,
    title: str = "",
) -> str:
  """A reliability diagram: accuracy against confidence per bin, one line per predictor, and the diagonal.

  Args:
    path: output file.
    tables: ``{label: reliability table}`` (``confidence``, ``accuracy``, ``count``,
      as :func:`experiments.calibration.reliability` returns them, arrays or lists).
    title: figure title.

  Returns:
    ``path`` as a string.
  """
  fig = Figure(figsize=(4.8, 4.4))
  ax = fig.subplots()
  ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
  for label, table in tables.items():
    confidence, accuracy = (np.asarray(table[k], np.float64) for k in ("confidence", "accuracy"))
    filled = np.asarray(table["count"]) > 0
    ax.plot(confidence[filled], accuracy[filled], marker="o", label=label)
  ax.set_xlabel("confidence (top probability)")
  ax.set_ylabel("accuracy")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return str(path)
