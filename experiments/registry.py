"""The experiments by name (``e1`` ... ``e9``): every script ``experiments/e<N>_<what>.py`` and its
``EXPERIMENT``, in the order of N.

The scripts are found on disk, not listed here: a new experiment is one new
script (with its test and its line in docs/experiments.md), and no other file
changes. Importing this module imports every script; no script imports it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from experiments.errors import ConfigError
from experiments.runner import Emit, Experiment, run_recorded

__all__ = ["EXPERIMENTS", "SCRIPTS", "get", "run_experiment"]

SCRIPT = re.compile(r"e(\d+)_\w+\.py")


def _scripts() -> dict[str, ModuleType]:
  """``{module name: module}`` of every ``e<N>_*.py`` beside this file, by N."""
  found = [p.name for p in Path(__file__).parent.iterdir() if SCRIPT.fullmatch(p.name)]
  found.sort(key=lambda name: int(SCRIPT.fullmatch(name).group(1)))
  return {name[:-3]: importlib.import_module(f"{__package__}.{name[:-3]}") for name in found}


SCRIPTS: dict[str, ModuleType] = _scripts()
EXPERIMENTS: dict[str, Experiment] = {m.EXPERIMENT.name: m.EXPERIMENT for m in SCRIPTS.values()}


def __getattr__(name: str) -> ModuleType:
  """A script's module by its name (``from experiments.registry import e2_d2l_mlp``), as when the scripts
  were listed here."""
  if name in SCRIPTS:
    return SCRIPTS[name]
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(name: str) -> Experiment:
  """The experiment called ``name``; :class:`ConfigError` lists the valid names."""
  try:
    return EXPERIMENTS[name]
  except KeyError:
    raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.") from None


def run_experiment(
    name: str, out_dir: str | Path, *, emit: Emit | None = None, quiet: bool = True, **options: Any
) -> dict[str, Any]:
  """Runs the experiment ``name`` into ``out_dir`` (which must exist) and returns its record.

  Args:
    name: an experiment name (``e1`` ... ``e9``).
    out_dir: output folder for ``record.json`` and the PNGs.
    emit: receives the summary lines (default: logging).
    quiet: no progress bar.
    **options: config fields (``epochs=2``, ``dataset="digits"``, ...).

  Returns:
    The record (see :func:`experiments.runner.run_recorded`).

  Raises:
    ConfigError: an unknown name or option, or an invalid value.
  """
  return run_recorded(get(name), out_dir, emit=emit, quiet=quiet, **options)
