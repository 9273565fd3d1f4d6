"""The experiments by name (``e1`` ... ``e8``), and running one into a folder with its record."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from experiments import (
    e1_mnist_mlp,
    e2_d2l_mlp,
    e3_weight_decay,
    e4_cnn,
    e5_lstm,
    e6_small_nets,
    e7_penalties,
    e8_vit,
    e9_uncertainty,
)
from experiments.records import RunRecord
from experiments.runner import Emit, Experiment
from jaxdrop.errors import ConfigError

__all__ = ["EXPERIMENTS", "get", "run_experiment"]

EXPERIMENTS: dict[str, Experiment] = {
    m.EXPERIMENT.name: m.EXPERIMENT
    for m in (e1_mnist_mlp, e2_d2l_mlp, e3_weight_decay, e4_cnn, e5_lstm, e6_small_nets, e7_penalties, e8_vit,
              e9_uncertainty)
}


def get(name: str) -> Experiment:
  """The experiment called ``name``; :class:`ConfigError` lists the valid names."""
  try:
    return EXPERIMENTS[name]
  except KeyError:
    raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.") from None


def run_experiment(
    name: str, out_dir: str | Path, *, emit: Emit | None = None, quiet: bool = True, **options: Any
) -> dict[str, Any]:
  """Runs an experiment into ``out_dir`` (which must exist) and returns its record.

  Args:
    name: an experiment name (``e1`` ... ``e8``).
    out_dir: output folder for ``record.json`` and the PNGs.
    emit: receives the summary lines (default: logging).
    quiet: no progress bar.
    **options: config fields (``epochs=2``, ``dataset="digits"``, ...).

  Returns:
    The record, also written to ``out_dir/record.json``. A run that raises
    still writes its record, with ``status`` ``"failed"`` and the error,
    unless it is a :class:`ConfigError` raised before any model was trained
    (a usage error: nothing to record).
  """
  experiment = get(name)
  fields = {f.name for f in dataclasses.fields(experiment.config)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {name}; valid: {', '.join(sorted(fields))}.")
  config = experiment.config(**options)
  config.validate()
  record = RunRecord(experiment, config, Path(out_dir))
  emit = emit or logging.getLogger("jaxdrop").info
  try:
    experiment.run(config, record, emit, quiet)
  except ConfigError as e:
    if record.data["runs"]:
      record.finish("failed", error=f"ConfigError: {e}")
    raise
  except BaseException as e:
    record.finish("failed", error=f"{type(e).__name__}: {e}")
    raise
  return record.finish()
