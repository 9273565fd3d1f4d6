"""PNG figures of training curves and reliability, each saying what it shows: y labels, limits from the
data (a log scale where a quantity spans decades), the spread over seeds, the count behind each point.

Drawn on a ``matplotlib.figure.Figure`` with its own Agg canvas: no pyplot, so
importing this module leaves the user's matplotlib backend alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["CLASSIFIER", "RUNNING_TRAIN", "draw_curves", "draw_estimates", "draw_intervals", "draw_reliability",
           "plot_curves", "plot_estimates", "plot_intervals", "plot_reliability", "spans_decades"]

# The panels of a classifier's curves: {y label: series of the history}.
CLASSIFIER = {"cross-entropy loss": ("train_loss", "test_loss"), "accuracy": ("train_acc", "test_acc")}
# What the engine's train metrics are unless a run evaluates the training set (FitOptions.eval_train).
RUNNING_TRAIN = "train (running mean over the epoch, dropout on)"
_STYLES = {"train": "--", "test": "-"}


def spans_decades(values, decades: float = 2.0) -> bool:
  """Whether positive ``values`` span at least ``decades`` orders of magnitude (a log axis shows them).

  Example:
    >>> spans_decades([0.002, 2.3]), spans_decades([0.1, 0.9]), spans_decades([-1.0, 5.0])
    (True, False, False)
  """
  values = np.asarray([v for v in np.ravel(values) if np.isfinite(v)], np.float64)
  return bool(values.size and values.min() > 0 and values.max() / values.min() >= 10**decades)


def _series_label(name: str, train_label: str) -> str:
  kind = name.split("_")[0]
  return train_label if kind == "train" else "test" if kind == "test" else name.replace("_", " ")


def _seed_histories(run: Mapping[str, Any]) -> list[dict[str, list[float]]]:
  """The per-seed histories of a run entry with several seeds (``per_seed``); empty for one seed."""
  return [entry["history"] for entry in run.get("per_seed", [])]


def plot_curves(path: str | os.PathLike, runs: Sequence[Mapping[str, Any]], *args, **kwargs) -> str:
  """Saves :func:`draw_curves` (same arguments after ``path``) as a PNG; returns ``path`` as a string."""
  draw_curves(runs, *args, **kwargs).savefig(path, dpi=110)
  return str(path)


def draw_curves(
    runs: Sequence[Mapping[str, Any]],
    panels: Mapping[str, Sequence[str]] = CLASSIFIER,
    *,
    title: str = "",
    train_label: str = RUNNING_TRAIN,
    log: Sequence[str] = (),
    separate: bool = False,
) -> Figure:
  """One panel per quantity, one colour per run, train dashed and test solid, against the epoch.

  A run with several seeds (its ``per_seed`` entries) is drawn as the mean
  with a band of one standard deviation over the seeds, cut to the range of
  the seeds' own values (so an accuracy's band never passes 1, and a loss's
  never reaches 0 on a log axis). A panel's y axis is
  logarithmic when its values span two decades or more (or it is in ``log``);
  its limits come from the data.

  Args:
    runs: dicts with a ``name`` and a ``history`` (``epoch`` and the series), and optionally ``per_seed``.
    panels: ``{y label: history keys}``, e.g. :data:`CLASSIFIER`.
    title: figure title.
    train_label: the legend's name of the ``train_*`` series (what the train metrics are).
    log: y labels of panels drawn on a log scale whatever their span.
    separate: a row of panels per run (runs of other tasks or lengths), instead of all runs in each panel.

  Returns:
    The figure (:func:`plot_curves` saves it).
  """
  panels = {label: [s for s in series if any(s in run["history"] for run in runs)]
            for label, series in panels.items()}
  panels = {label: series for label, series in panels.items() if series}
  rows = [[run] for run in runs] if separate else [list(runs)]
  fig = Figure(figsize=(max(4.6 * len(panels), 6.4), 3.4 * len(rows) + 1.0), layout="constrained")
  grid = fig.subplots(len(rows), len(panels), squeeze=False)
  colors = {run["name"]: f"C{i}" for i, run in enumerate(runs)}
  for axes, row in zip(grid, rows, strict=True):
    for ax, (ylabel, series) in zip(axes, panels.items(), strict=True):
      _draw_panel(ax, row, series, ylabel, colors, log)
    if separate:
      axes[0].set_title(row[0]["name"], fontsize=10, loc="left")
  present = {name.split("_")[0] for series in panels.values() for name in series}
  handles = [Line2D([], [], color="black", linestyle=_STYLES[kind], label=_series_label(kind, train_label))
             for kind in ("train", "test") if kind in present]
  if len(runs) > 1 and not separate:
    handles = [Line2D([], [], color=colors[run["name"]], label=run["name"]) for run in runs] + handles
  if handles:  # below the panels, where it hides no curve
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
  notes = [title] if title else []
  if any(len(_seed_histories(run)) > 1 for run in runs):
    notes.append("bands: ± 1 sd over the seeds around their mean, within the seeds' range")
  if notes:
    fig.suptitle("\n".join(notes), fontsize=10)
  return fig


def _draw_panel(ax, runs, series, ylabel: str, colors: dict[str, str], log: Sequence[str]) -> None:
  """The lines (and seed bands) of ``series`` of each run on ``ax``, its y label and scale."""
  shown = []
  for run in runs:
    history, seeds = run["history"], _seed_histories(run)
    epochs = np.asarray(history["epoch"])
    for name in series:
      if name not in history:
        continue
      mean = np.asarray(history[name], np.float64)
      shown.append(mean)
      ax.plot(epochs, mean, color=colors[run["name"]], linestyle=_STYLES.get(name.split("_")[0], "-"),
              marker="." if len(epochs) < 30 else None)
      if len(seeds) > 1:
        values = np.asarray([h[name] for h in seeds], np.float64)
        sd = values.std(axis=0, ddof=1)
        # Within the seeds' own values (a loss's band never reaches 0 on a log axis), and so within the
        # metric's range (an accuracy's never passes 1).
        low, high = np.maximum(mean - sd, values.min(axis=0)), np.minimum(mean + sd, values.max(axis=0))
        ax.fill_between(epochs, low, high, color=colors[run["name"]], alpha=0.2, linewidth=0)
        shown.append(values)
  values = np.concatenate([np.ravel(v) for v in shown]) if shown else np.zeros(0)
  if ylabel in log or spans_decades(values):
    ax.set_yscale("log")
    ylabel += " (log scale)"
  elif values.size and values.min() < 0 < values.max():
    ax.axhline(0, color="grey", linewidth=0.8)
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)


def plot_reliability(path: str | os.PathLike, tables: dict[str, dict[str, Any]], *, title: str = "") -> str:
  """Saves :func:`draw_reliability` as a PNG; returns ``path`` as a string."""
  draw_reliability(tables, title=title).savefig(path, dpi=110)
  return str(path)


def draw_reliability(tables: dict[str, dict[str, Any]], *, title: str = "") -> Figure:
  """A reliability diagram with its bin counts: accuracy against confidence per bin, one line per predictor,
  the diagonal, and below it how many examples fell into each bin.

  Args:
    tables: ``{label: reliability table}`` (``confidence``, ``accuracy``, ``count``, ``edges``,
      as :func:`experiments.calibration.reliability` returns them, arrays or lists).
    title: figure title.

  Returns:
    The figure (:func:`plot_reliability` saves it).
  """
  fig = Figure(figsize=(5.2, 6.2), layout="constrained")
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
  top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
  for i, (label, table) in enumerate(tables.items()):
    confidence, accuracy, count = (np.asarray(table[k], np.float64)
                                   for k in ("confidence", "accuracy", "count"))
    edges = np.asarray(table["edges"], np.float64)
    filled = count > 0
    top.plot(confidence[filled], accuracy[filled], marker="o", color=f"C{i}", label=label)
    width = np.diff(edges) / (len(tables) + 1)
    bottom.bar((edges[:-1] + width * (i + 0.5))[filled], count[filled], width=width[filled], align="edge",
               color=f"C{i}", label=label)
  top.set_ylabel("accuracy in the bin")
  top.set_xlim(0, 1)
  top.set_ylim(-0.02, 1.02)  # accuracy and confidence are probabilities: the square shows the diagonal
  top.grid(alpha=0.3)
  top.legend(fontsize=8)
  bottom.set_yscale("log")
  bottom.set_ylabel("examples (log scale)")
  bottom.set_xlabel("confidence (top class probability), by bin")
  bottom.grid(alpha=0.3)
  if title:
    top.set_title(title, fontsize=10)
  return fig


def plot_intervals(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[Mapping[str, Any]]],
                   **kwargs) -> str:
  """Saves :func:`draw_intervals` (same arguments after ``path``) as a PNG; returns ``path`` as a string."""
  draw_intervals(x, series, **kwargs).savefig(path, dpi=110)
  return str(path)


def draw_intervals(x: Sequence[float], series: Mapping[str, Sequence[Mapping[str, Any]]], *, xlabel: str,
                   ylabel: str, title: str = "", log_x: bool = False) -> Figure:
  """Means with their 95 % confidence intervals against ``x``, one line per series.

  Args:
    x: the positions (labelled as they are, also on a log axis).
    series: ``{label: [summary, ...]}``, one :func:`~experiments.records.seed_summary` per position.
    xlabel, ylabel, title: the labels.
    log_x: a log-scaled x axis.

  Returns:
    The figure (:func:`plot_intervals` saves it).
  """
  fig = Figure(figsize=(6, 4.2), layout="constrained")
  ax = fig.subplots()
  for i, (label, summaries) in enumerate(series.items()):
    mean = np.asarray([s["mean"] for s in summaries], np.float64)
    low = mean - np.asarray([s["ci95"][0] for s in summaries], np.float64)
    high = np.asarray([s["ci95"][1] for s in summaries], np.float64) - mean
    ax.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, color=f"C{i}", label=label)
  if log_x:
    ax.set_xscale("log")
  ax.set_xticks(list(x), [f"{v:,}" for v in x])
  ax.minorticks_off()
  ax.set_xlabel(xlabel + (" (log scale)" if log_x else ""))
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  return fig


def plot_estimates(path: str | os.PathLike, rows: Mapping[str, Mapping[str, Any]], **kwargs) -> str:
  """Saves :func:`draw_estimates` (same arguments after ``path``) as a PNG; returns ``path`` as a string."""
  draw_estimates(rows, **kwargs).savefig(path, dpi=110)
  return str(path)


def draw_estimates(rows: Mapping[str, Mapping[str, Any]], *, title: str = "",
                   metrics: Mapping[str, str] = {"rmse": "test RMSE (lower is better)",
                                                 "ll": "test log-likelihood (higher is better)"}) -> Figure:
  """Estimates with their standard errors, one row each, in one panel per metric: ours beside published ones.

  Args:
    rows: ``{label: {metric: {"mean": m, "se": s}, ..., "ours": bool}}``; rows marked ``ours`` are drawn in
      colour, the others (published) in grey.
    title: the figure's title.
    metrics: ``{metric key: axis label}``, one panel each.

  Returns:
    The figure (:func:`plot_estimates` saves it).
  """
  fig = Figure(figsize=(9, 0.5 * len(rows) + 1.6), layout="constrained")
  axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
  y = np.arange(len(rows))[::-1]
  for ax, (key, label) in zip(axes, metrics.items(), strict=True):
    for yi, (name, row) in zip(y, rows.items(), strict=True):
      ax.errorbar(row[key]["mean"], yi, xerr=row[key]["se"], marker="o", capsize=3,
                  color="C0" if row.get("ours") else "0.45")
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_yticks(y, list(rows))
  if title:
    fig.suptitle(title, fontsize=10)
  return fig
