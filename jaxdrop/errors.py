"""Every error the library raises: those a user can fix from the message alone.

Each message names the argument or the file and the fix in the library's own
terms (``FitOptions.epochs``, ``resume=False``, a ``Checkpoints`` directory);
the errors also carry the fix as fields, so that a command line built on the
library can say it in its own flags.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "JaxdropError",
    "TrainingDivergedError",
    "TrainingStopped",
]


class JaxdropError(Exception):
  """Base class of the errors a user can fix from the message alone."""


class CheckpointError(JaxdropError, RuntimeError):
  """No usable checkpoint where one was expected.

  Attributes:
    directory: the checkpoint directory concerned (``None`` if not known).
    fix: what changes to make it go away, by argument name: ``"resume"``
      (start afresh: ``resume=False``), ``"directory"`` (another
      :class:`~jaxdrop.training.Checkpoints` directory) or a
      :class:`~jaxdrop.training.FitOptions` field such as ``"epochs"``; a
      command line maps these names to its flags.

  Example:
    >>> e = CheckpointError("no readable checkpoint left", fix=("resume", "directory"))
    >>> e.fix, str(e)
    (('resume', 'directory'), 'no readable checkpoint left')
  """

  def __init__(self, message: str, *, directory: str | Path | None = None, fix: tuple[str, ...] = ()):
    super().__init__(message)
    self.directory = None if directory is None else Path(directory)
    self.fix = tuple(fix)

  def __reduce__(self):  # pickled whole (a worker process's error reaches its parent with its fields)
    return _rebuild, (type(self), self.args, self.__dict__)


class CheckpointMismatchError(CheckpointError):
  """The checkpoint was written by a run with a different configuration, or for arrays of other shapes.

  Attributes:
    step: the checkpoint's step (``None`` if not known).
    at_least: where ``fix`` names one option that must grow (``("epochs",)``:
      a run does not shrink), its smallest value that works; else ``None``.
  """

  def __init__(self, message: str, *, directory: str | Path | None = None, fix: tuple[str, ...] = (),
               step: int | None = None, at_least: int | None = None):
    super().__init__(message, directory=directory, fix=fix)
    self.step, self.at_least = step, at_least


class TrainingDivergedError(JaxdropError, FloatingPointError):
  """The training loss became NaN or infinite.

  Attributes:
    step: the optimizer step (1-based) whose loss was not finite.
    loss: that loss.
  """

  def __init__(self, step: int, loss: float):
    self.step, self.loss = step, loss
    super().__init__(
        f"the training loss became {loss} at step {step}; lower the learning rate or check the"
        " inputs (the run stopped; nothing after this step was kept)."
    )

  def __reduce__(self):
    return type(self), (self.step, self.loss)


class TrainingStopped(KeyboardInterrupt):
  """Training stopped between two steps because :func:`~jaxdrop.training.fit`'s ``stop`` asked it to.

  A :class:`KeyboardInterrupt`, as Ctrl-C: ``except Exception`` does not swallow it.

  Attributes:
    step: the optimizer step the run stopped after.
    checkpointed: whether that step's checkpoint is saved (``resume=True`` continues from it).

  Example:
    >>> str(TrainingStopped(8, checkpointed=True))
    'training stopped after step 8, as asked (its checkpoint is saved: resume=True continues the run).'
  """

  def __init__(self, step: int, checkpointed: bool):
    self.step, self.checkpointed = step, checkpointed
    saved = ("its checkpoint is saved: resume=True continues the run" if checkpointed
             else "no checkpoints were asked for, so nothing was saved")
    super().__init__(f"training stopped after step {step}, as asked ({saved}).")

  def __reduce__(self):
    return type(self), (self.step, self.checkpointed)


def _rebuild(cls, args, fields):
  error = cls.__new__(cls)
  error.args = args
  error.__dict__.update(fields)
  return error
