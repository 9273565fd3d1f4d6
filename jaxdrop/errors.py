"""Every jaxdrop error: those a user can fix from the message alone (the command line reports them in one
line, no traceback)."""

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "JaxdropError",
    "OutputExistsError",
    "OutputInUseError",
    "OutputMismatchError",
    "TrainingDivergedError",
]


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


class CheckpointError(JaxdropError, RuntimeError):
  """No usable checkpoint where one was expected."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint was written by a run with a different configuration, or for arrays of other shapes."""


class TrainingDivergedError(JaxdropError, FloatingPointError):
  """The training loss became NaN or infinite."""

  def __init__(self, step: int, loss: float):
    self.step, self.loss = step, loss
    super().__init__(
        f"the training loss became {loss} at step {step}; lower the learning rate or check the"
        " inputs (the run stopped; nothing after this step was kept)."
    )
