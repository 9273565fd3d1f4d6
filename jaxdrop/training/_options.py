"""How :func:`~jaxdrop.training.fit` trains: :class:`FitOptions`."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import numpy as np
import optax

__all__ = ["EpochPath", "FitOptions", "MaskGenerator"]

EpochPath = Literal["auto", "scan", "loop"]
MaskGenerator = Literal["philox4x32-10", "philox4x32-7"]


def _positive_int(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"FitOptions.{name} must be a positive integer, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class FitOptions:
  """How :func:`fit` trains: epochs, batches, execution and reporting.

  Attributes:
    epochs: number of passes over the training set.
    batch_size: training batch size.
    shuffle: reshuffle the training set every epoch.
    path: ``"scan"`` (one compiled call per epoch), ``"loop"`` (the jitted
      step from Python) or ``"auto"`` (:func:`~jaxdrop.training.xla_cpu.choose_path`).
    eval_every: evaluate every this many epochs (and after the last).
    eval_train: report the training loss/accuracy of a deterministic pass over
      the training set (as d2l's ``evaluate_loss``) instead of the running
      average of the training steps (as d2l's ``train_epoch``).
    batch_invariant: draw each example's dropout masks from its own key
      (:func:`~jaxdrop.training.example_keys`), independent of batch size,
      batch composition and device count.
    compiler_options: XLA options for the compiled steps; ``"auto"``:
      :func:`~jaxdrop.training.xla_cpu.choose_compiler_options`; ``None``: XLA's defaults.
    quiet: no progress bar (it is also off when stderr is not a terminal).
    description: label of the progress bar.
    mask_generator: what the training steps' dropout masks are drawn from:
      ``"philox4x32-10"`` (the default generator, :data:`jaxdrop.MASK_GENERATOR`) or
      ``"philox4x32-7"`` (the run's dropout key becomes a key of :data:`jaxdrop.PHILOX7`, the
      cheaper opt-in generator, :data:`jaxdrop.MASK_GENERATOR_7`: other masks).
    average: weight averaging, :func:`jaxdrop.ema` or :func:`jaxdrop.swa`:
      ``fit`` chains it after the optimizer and evaluates the averaged
      parameters (``execution["evaluated"]`` says which;
      :attr:`FitResult.averaged_params` holds them; ``state.params`` stays the
      trained ones). Before SWA's first snapshot its average is the current
      parameters. ``None``: no averaging, the parameters are evaluated.

  Example:
    >>> from jaxdrop.training import FitOptions
    >>> FitOptions(epochs=3, batch_size=32).path
    'auto'
  """

  epochs: int
  batch_size: int
  shuffle: bool = True
  path: EpochPath = "auto"
  eval_every: int = 1
  eval_train: bool = False
  batch_invariant: bool = False
  compiler_options: dict[str, str] | Literal["auto"] | None = "auto"
  quiet: bool = False
  description: str = ""
  average: optax.GradientTransformation | None = None
  mask_generator: MaskGenerator = "philox4x32-10"

  def __post_init__(self):
    for name in ("epochs", "batch_size", "eval_every"):
      _positive_int(name, getattr(self, name))
    if self.path not in ("auto", "scan", "loop"):
      raise ValueError(f"FitOptions.path must be 'auto', 'scan' or 'loop', got {self.path!r}.")
    options = self.compiler_options
    if not (options is None or options == "auto" or (isinstance(options, dict) and all(
        isinstance(k, str) and isinstance(v, (str, bool, int, float)) for k, v in options.items()))):
      raise ValueError(f"FitOptions.compiler_options must be 'auto', None or a dict of XLA option names to"
                       f" values, got {options!r}.")
    if self.mask_generator not in typing.get_args(MaskGenerator):
      raise ValueError(f"FitOptions.mask_generator must be 'philox4x32-10' (the default) or 'philox4x32-7'"
                       f" (jaxdrop.PHILOX7), got {self.mask_generator!r}.")
    if self.average is not None and not isinstance(self.average, optax.GradientTransformation):
      raise ValueError(f"FitOptions.average must be jaxdrop.ema(...), jaxdrop.swa(...) or None, got"
                       f" {self.average!r}.")
