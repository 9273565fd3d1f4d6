"""The errors only the experiments raise: bad options, data sets, run folders.

They derive from :class:`jaxdrop.errors.JaxdropError`, as the library's do, so
the command line reports both in one line (exit status 2 for a
:class:`ConfigError`, 1 for the others; :mod:`experiments.command_line`).
"""

from __future__ import annotations

from jaxdrop.errors import JaxdropError

__all__ = [
    "ConfigError",
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "OutputExistsError",
    "OutputInUseError",
    "OutputMismatchError",
]


class ConfigError(JaxdropError, ValueError):
  """An experiment option (a flag) has an invalid value."""


class DatasetUnavailableError(JaxdropError, RuntimeError):
  """A data set is not prepared locally and cannot be downloaded."""


class DatasetCorruptError(JaxdropError, RuntimeError):
  """A prepared data set's files cannot be read (truncated, wrong format)."""


class OutputExistsError(JaxdropError, FileExistsError):
  """The output folder already holds a run (pass --overwrite to replace it)."""


class OutputInUseError(JaxdropError, RuntimeError):
  """Another process holds the output folder's lock."""


class OutputMismatchError(ConfigError):
  """``--resume`` on a folder holding another experiment's run, or a run with other options."""
