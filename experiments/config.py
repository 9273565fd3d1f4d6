"""The options every experiment takes, as a dataclass that the command line and the run folder read.

Each experiment subclasses :class:`Config` with its source tutorial's values
as defaults; ``validate`` names the first bad option and what is allowed.

A field named like a :class:`~jaxdrop.training.FitOptions` field (``epochs``,
``batch_size``, ``path``, ``batch_invariant``, ``compiler_options``,
``mask_generator``) holds that
field's value and goes to the engine as it is (:func:`experiments.runner.train_run`),
and its flag is the field's name (``--batch-invariant``). Options renamed since
a record was written are read back through :data:`RENAMED`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import jax

from experiments.data import DATASETS
from experiments.errors import ConfigError
from jaxdrop.training import MaskGenerator

__all__ = ["RENAMED", "RUN_CONTROL", "Config", "config_values", "flag", "option", "result_options", "shown"]


def option(default, help: str, **metadata):
  """A config field with its command-line help (and optional ``choices``)."""
  if isinstance(default, (list, tuple)):
    return dataclasses.field(default_factory=lambda: tuple(default), metadata={"help": help, **metadata})
  return dataclasses.field(default=default, metadata={"help": help, **metadata})


MAX_SEED = 2**32 - 1


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def flag(name: str) -> str:
  """The command-line flag of the option ``name``: ``batch_size`` is ``--batch-size``."""
  return "--" + name.replace("_", "-")


def shown(value) -> str:
  """An option's value as the command line spells it: ``None`` is ``none``, a tuple its items."""
  if value is None:
    return "none"
  return " ".join(map(shown, value)) if isinstance(value, tuple) else str(value)


@dataclasses.dataclass
class Config:
  """Options every experiment takes; subclasses set the source tutorial's values as defaults."""

  seed: int = option(0, "run seed: initialization, dropout masks and shuffling all derive from it")
  epochs: int | None = option(
      None, "passes over the training set (default: the source tutorial's count on its data set; on a smaller"
      " fallback data set, as many as make the source tutorial's number of optimizer steps)"
  )
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.1, "learning rate")
  dataset: str = option(
      "auto", "data set; 'auto' uses the source tutorial's when prepared locally, else the offline default",
      choices=("auto", *DATASETS),
  )
  data_dir: str | None = option(None, "tensorflow-datasets data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  path: str = option(
      "auto", "epoch execution: one compiled scan per epoch, a Python loop of jitted steps, or auto"
      " (scan, except convolutional models on CPU)", choices=("auto", "scan", "loop"),
  )
  compiler_options: str | None = option(
      "auto", "XLA options of the compiled steps: auto lets jaxdrop set XLA:CPU options for convolutional models"
      " (YNNPACK dot fusion, about 1.6x faster steps); none compiles with XLA's defaults",
      choices=("auto", None),
  )
  seeds: int = option(
      1, "train this many seeds (seed, seed+1, ...) together in one vmapped program and report the mean,"
      " standard deviation and 95%% confidence interval of each final metric"
  )
  batch_invariant: bool = option(
      False, "derive each example's dropout masks from the run key, the epoch and the example's index in the"
      " data set, so they do not depend on batch size, batch composition or device count"
  )
  mask_generator: str = option(
      "philox4x32-10", "what the training steps' dropout masks are drawn from: jaxdrop's default generator, or"
      " the cheaper opt-in 7-round Philox (jaxdrop.PHILOX7 keys: other masks, recorded in record.json)",
      choices=typing.get_args(MaskGenerator),
  )
  devices: int = option(1, "data-parallel training: split each batch over this many local devices (0: all)")
  checkpoint_every: int = option(
      0, "save an orbax checkpoint every this many optimizer steps and at the end (0: none, unless --resume)"
  )
  resume: bool = option(False, "continue from the newest good checkpoint in --out (the same options are required)")

  def validate(self) -> None:
    """Raises :class:`ConfigError` naming the first invalid option and what is allowed."""
    hints = typing.get_type_hints(type(self))
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      name = flag(f.name)
      choices = f.metadata.get("choices")
      values = value if isinstance(value, tuple) else (value,)
      if choices is not None and any(v not in choices for v in values):
        raise ConfigError(f"{name}: invalid choice {value!r}; choose from {', '.join(map(shown, choices))}.")
      if value is None and f.name == "epochs":
        continue
      if f.name == "seed":
        runs = self.seeds if _is_int(self.seeds) and self.seeds > 0 else 1  # --seeds is checked below
        if not _is_int(value) or value < 0 or value + runs - 1 > MAX_SEED:
          raise ConfigError(f"{name} must be an integer in 0..{MAX_SEED} (with --seeds N, seed + N - 1 too: JAX's"
                            f" keys hold 32 bits, larger seeds would repeat smaller ones), got {value!r}.")
      elif f.name in ("devices", "checkpoint_every"):
        if not _is_int(value) or value < 0:
          raise ConfigError(f"{name} must be an integer >= 0, got {value!r}.")
      elif hints[f.name] in (int, int | None):  # sizes and counts: layers, units, examples, epochs, steps
        if not _is_int(value) or value < 1:
          raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
      if f.name == "lr" or f.name.endswith("_lr"):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
          raise ConfigError(f"{name} must be a positive number, got {value!r}.")
      if f.metadata.get("rate"):
        for v in values:
          if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ConfigError(f"{name} must be a drop probability in [0, 1], got {value!r}.")
      if f.metadata.get("nonnegative"):
        for v in values:
          if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")
    if self.devices != 1:
      available = len(jax.devices())
      devices = self.devices or available
      if devices > available:
        raise ConfigError(f"--devices {devices} asks for more devices than the {available} JAX sees"
                          f" ({jax.devices()[0].platform}); on CPU, set"
                          f" XLA_FLAGS=--xla_force_host_platform_device_count={devices} before starting.")
      if self.batch_size % devices:
        raise ConfigError(f"--batch-size {self.batch_size} does not split evenly over {devices} devices;"
                          f" use a multiple of {devices}.")


# Options that change how a run executes or is saved, not its result; a run may
# resume under other values of these.
RUN_CONTROL = ("epochs", "path", "data_dir", "devices", "checkpoint_every", "resume", "compiler_options")

# Options renamed since records were first written, to carry FitOptions' names: the old name, its new name and
# how an old value reads today. Replay reads old records through them, and the old flags still work (hidden).
RENAMED: dict[str, tuple[str, typing.Callable[[Any], Any]]] = {
    "batch_invariant_masks": ("batch_invariant", lambda on: on),
    "tuned_xla": ("compiler_options", lambda on: "auto" if on else None),
}


def result_options(config: Config) -> dict[str, Any]:
  """The options that decide a run's result (all but :data:`RUN_CONTROL`): a resumed run must repeat them."""
  return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_CONTROL}


def config_values(values: dict[str, Any]) -> dict[str, Any]:
  """Option values as the config fields hold them: lists (argparse's ``nargs``, a record's JSON) become tuples,
  and options under an old name (:data:`RENAMED`) their new name and value.

  Example:
    >>> config_values({"versions": ["concise"], "tuned_xla": False, "batch_invariant_masks": True})
    {'versions': ('concise',), 'compiler_options': None, 'batch_invariant': True}
  """
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  for old, (new, convert) in RENAMED.items():
    if old in values:
      value = values.pop(old)
      values.setdefault(new, convert(value))
  return values
