"""What every experiment shares: its config base, the registry entry, training a
classifier through the engine, and the run record."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxdrop import engine
from jaxdrop.data import DATASETS, Dataset
from jaxdrop.errors import ConfigError
from jaxdrop.records import environment, param_sha256, write_json

log = logging.getLogger("jaxdrop")

Emit = Callable[[str], None]


def option(default, help: str, **metadata):
  """A config field with its command-line help (and optional ``choices``)."""
  if isinstance(default, (list, tuple)):
    return dataclasses.field(default_factory=lambda: tuple(default), metadata={"help": help, **metadata})
  return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass
class Config:
  """Options every experiment takes; subclasses set the seed's values as defaults."""

  seed: int = option(0, "run seed: initialization, dropout masks and shuffling all derive from it")
  epochs: int | None = option(
      None, "passes over the training set (default: the seed's count on its data set; on a smaller"
      " fallback data set, as many as make the seed's number of optimizer steps)"
  )
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.1, "learning rate")
  dataset: str = option(
      "auto", "data set; 'auto' uses the seed's when prepared locally, else the offline default",
      choices=("auto", *DATASETS),
  )
  data_dir: str | None = option(None, "tensorflow-datasets data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  path: str = option(
      "auto", "epoch execution: one compiled scan per epoch, a Python loop of jitted steps, or auto"
      " (scan, except convolutional models on CPU)", choices=("auto", "scan", "loop"),
  )

  def validate(self) -> None:
    """Raises :class:`ConfigError` naming the first invalid option and what is allowed."""
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      flag = "--" + f.name.replace("_", "-")
      choices = f.metadata.get("choices")
      values = value if isinstance(value, tuple) else (value,)
      if choices is not None and any(v not in choices for v in values):
        raise ConfigError(f"{flag}: invalid choice {value!r}; choose from {', '.join(map(str, choices))}.")
      if f.name in ("epochs", "batch_size") or f.name.endswith(("_epochs", "_batch_size")):
        if value is None and f.name == "epochs":
          continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
          raise ConfigError(f"{flag} must be a positive integer, got {value!r}.")
      if f.name == "lr" or f.name.endswith("_lr"):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
          raise ConfigError(f"{flag} must be a positive number, got {value!r}.")
      if f.metadata.get("rate"):
        for v in values:
          if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ConfigError(f"{flag} must be a drop probability in [0, 1], got {value!r}.")
      if f.metadata.get("nonnegative"):
        for v in values:
          if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{flag} must be a finite number >= 0, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A registry entry: what ``jaxdrop list`` shows and ``jaxdrop run NAME`` runs."""

  name: str
  title: str
  source: str
  config: type[Config]
  run: Callable[[Config, "RunRecord", Emit, bool], None]


# Training-set sizes of the seeds' data sets, to keep their number of steps on a fallback.
NATIVE_TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def epochs_for(config: Config, data: Dataset, native: str, native_epochs: int, emit: Emit) -> int:
  """The number of epochs to run: ``--epochs`` if given, else the seed's.

  When the run fell back from the seed's data set ``native`` to a smaller one,
  the default becomes the number of epochs that makes as many optimizer steps
  as the seed's ``native_epochs`` on ``native`` (at the configured batch size).
  """
  if config.epochs is not None:
    return config.epochs
  if data.name == native or native not in NATIVE_TRAIN_SIZES:
    return native_epochs
  steps = native_epochs * math.ceil(NATIVE_TRAIN_SIZES[native] / config.batch_size)
  epochs = math.ceil(steps / math.ceil(len(data.y_train) / config.batch_size))
  emit(f"training for {epochs} epochs on {data.name}: the seed's {native_epochs} epochs on {native} are {steps}"
       f" optimizer steps at batch size {config.batch_size}")
  return epochs


def linen_task(model: nn.Module, *, loss=engine.cross_entropy, penalty=None, classification=True) -> engine.Task:
  """A :class:`~jaxdrop.engine.Task` for a linen module with ``__call__(x, train)``."""

  def apply(params, x, train, key):
    rngs = {"dropout": key} if train else None
    return model.apply({"params": params}, x, train=train, rngs=rngs)

  return engine.Task(apply, loss, penalty, classification)


def init_linen(model: nn.Module, seed: int, sample: np.ndarray):
  """The module's parameters from the run's ``init`` key (dropout off)."""
  return model.init(engine.run_keys(seed)["init"], sample[:1], train=False)["params"]


def train_run(
    name: str,
    task: engine.Task,
    params,
    tx: optax.GradientTransformation,
    data: Dataset,
    config: Config,
    *,
    quiet: bool,
    epochs: int | None = None,
    batch_size: int | None = None,
    **fit_kwargs,
) -> tuple[dict[str, Any], engine.FitResult]:
  """Fits one model and returns its record entry (history, final metrics, parameter hash).

  ``epochs`` and ``batch_size`` default to the config's.
  """
  result = engine.fit(
      task, params, tx, data, epochs=epochs or config.epochs or 1, batch_size=batch_size or config.batch_size,
      seed=config.seed, path=config.path, quiet=quiet, description=name, **fit_kwargs,
  )
  return run_entry(name, result), result


def run_entry(name: str, result: engine.FitResult) -> dict[str, Any]:
  """A run's record entry: history, final metrics, parameter hash, steps and execution path."""
  return {
      "name": name,
      "history": result.history,
      "final": {k: v[-1] for k, v in result.history.items() if k != "epoch"},
      "param_sha256": param_sha256(result.state.params),
      "steps": int(result.state.step),
      "execution": result.execution,
  }


def describe(entry: dict[str, Any]) -> str:
  """One summary line: ``name: train loss ..., train acc ..., test acc ...``."""
  parts = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in entry["final"].items()]
  return f"{entry['name']}: " + ", ".join(parts)


class RunRecord:
  """Accumulates ``record.json`` for one experiment run and writes it."""

  def __init__(self, experiment: Experiment, config: Config, out_dir: Path):
    self.out_dir = out_dir
    self.started = time.perf_counter()
    self.data: dict[str, Any] = {
        "experiment": experiment.name,
        "title": experiment.title,
        "source": experiment.source,
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "execution_path": config.path,
        "dataset": None,
        "runs": [],
        "figures": [],
        "status": "running",
    }

  def set_dataset(self, data: Dataset, requested: str) -> None:
    self.data["dataset"] = {
        "name": data.name,
        "requested": requested,
        "train_size": int(len(data.y_train)),
        "test_size": int(len(data.y_test)),
        "note": data.note,
    }

  def add_run(self, entry: dict[str, Any]) -> None:
    self.data["runs"].append(entry)

  def add_figure(self, path: str | Path) -> None:
    self.data["figures"].append(Path(path).name)

  def finish(self, status: str = "ok", **extra) -> dict[str, Any]:
    self.data.update(extra)
    self.data["status"] = status
    self.data["wall_time_s"] = round(time.perf_counter() - self.started, 3)
    write_json(self.out_dir / "record.json", self.data)
    return self.data


def norm(tree) -> float:
  """The L2 norm of all leaves of ``tree`` together."""
  return float(optax.tree.norm(jax.tree.map(lambda x: x.astype(np.float32), tree)))
