"""Errors that the command line reports in one line (no traceback)."""

__all__ = ["ConfigError", "DatasetCorruptError", "DatasetUnavailableError", "JaxdropError", "OutputExistsError", "OutputInUseError",
           "OutputMismatchError"]


class JaxdropError(Exception):
  """Base class of the errors a user can fix from the message alone."""


class ConfigError(JaxdropError, ValueError):
  """An experiment option has an invalid value."""


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
