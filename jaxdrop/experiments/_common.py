"""What every experiment shares: its config base, the registry entry, training a
classifier through the engine, and the run record."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import re
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxdrop import engine
from jaxdrop.checkpoints import Checkpoints
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


MAX_SEED = 2**32 - 1


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


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
  tuned_xla: bool = option(
      True, "let jaxdrop set XLA:CPU options for convolutional models (YNNPACK dot fusion, about 1.6x faster"
      " steps); --no-tuned-xla compiles with XLA's defaults"
  )
  seeds: int = option(
      1, "train this many seeds (seed, seed+1, ...) together in one vmapped program and report the mean,"
      " standard deviation and 95%% confidence interval of each final metric"
  )
  batch_invariant_masks: bool = option(
      False, "derive each example's dropout masks from the run key, the epoch and the example's index in the"
      " data set, so they do not depend on batch size, batch composition or device count"
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
      flag = "--" + f.name.replace("_", "-")
      choices = f.metadata.get("choices")
      values = value if isinstance(value, tuple) else (value,)
      if choices is not None and any(v not in choices for v in values):
        raise ConfigError(f"{flag}: invalid choice {value!r}; choose from {', '.join(map(str, choices))}.")
      if value is None and f.name == "epochs":
        continue
      if f.name == "seed":
        runs = self.seeds if _is_int(self.seeds) and self.seeds > 0 else 1  # --seeds is checked below
        if not _is_int(value) or value < 0 or value + runs - 1 > MAX_SEED:
          raise ConfigError(f"{flag} must be an integer in 0..{MAX_SEED} (with --seeds N, seed + N - 1 too: JAX's"
                            f" keys hold 32 bits, larger seeds would repeat smaller ones), got {value!r}.")
      elif f.name in ("devices", "checkpoint_every"):
        if not _is_int(value) or value < 0:
          raise ConfigError(f"{flag} must be an integer >= 0, got {value!r}.")
      elif hints[f.name] in (int, int | None):  # sizes and counts: layers, units, examples, epochs, steps
        if not _is_int(value) or value < 1:
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


def init_linen(model: nn.Module, sample: np.ndarray) -> Callable[[jax.Array], Any]:
  """``init_key -> params`` of a linen module with ``__call__(x, train)`` (dropout off)."""
  return lambda key: model.init(key, sample[:1], train=False)["params"]


# Options that change how a run executes or is saved, not its result; a run may
# resume under other values of these.
RUN_CONTROL = ("epochs", "path", "data_dir", "devices", "checkpoint_every", "resume", "tuned_xla")


def result_options(config: Config) -> dict[str, Any]:
  """The options that decide a run's result (all but :data:`RUN_CONTROL`): a resumed run must repeat them."""
  return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_CONTROL}


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def mesh_for(config: Config) -> jax.sharding.Mesh | None:
  """The data-parallel mesh of ``--devices`` (``None`` for one device)."""
  if config.devices == 1:
    return None
  devices = jax.devices()[: config.devices or None]
  return jax.sharding.Mesh(np.array(devices), ("data",))


def train_run(
    name: str,
    task: engine.Task,
    init: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    data: Dataset,
    config: Config,
    record: "RunRecord",
    *,
    quiet: bool,
    emit: Emit = log.info,
    epochs: int | None = None,
    batch_size: int | None = None,
    **fit_kwargs,
) -> tuple[dict[str, Any], list[engine.FitResult]]:
  """Fits one model for ``config.seeds`` seeds and returns its record entry and each seed's result.

  One seed is trained by :func:`~jaxdrop.engine.fit`, several by
  :func:`~jaxdrop.engine.fit_seeds` (vmapped, each seed's result equal to
  that seed run alone), or one after the other when each run is data-parallel
  (``--devices``). Checkpoints go to ``record.out_dir/checkpoints/NAME``.

  Args:
    name: the run's name in the record (and its checkpoint folder).
    task: the model and loss.
    init: ``init_key -> params``.
    tx: the optimizer.
    data: the data set.
    config: the experiment's options (seed, seeds, path, devices, ...).
    record: the run record (for its output folder).
    quiet: no progress bar.
    emit: receives the resume message.
    epochs: default ``config.epochs``.
    batch_size: default ``config.batch_size``.
    **fit_kwargs: more :func:`~jaxdrop.engine.fit` options.

  Returns:
    ``(entry, results)``; with several seeds the entry's ``history`` and
    ``final`` are means over the seeds, ``summary`` has each final metric's
    mean, standard deviation and 95 % confidence interval, and ``per_seed``
    each seed's own entry.
  """
  batch_size = batch_size or config.batch_size
  n_train = len(data.y_train)
  if batch_size > n_train:
    raise ConfigError(f"--batch-size {batch_size} is larger than the training set ({n_train} examples of"
                      f" {data.name}); use at most {n_train}.")
  seeds = list(range(config.seed, config.seed + config.seeds))
  checkpoints = None
  if config.checkpoint_every or config.resume:
    fingerprint = result_options(config)
    fingerprint.update(run=name, dataset_used=data.name, batch_size_used=batch_size)
    checkpoints = Checkpoints(record.out_dir / "checkpoints" / _slug(name), every_steps=config.checkpoint_every,
                              fingerprint=fingerprint)
    if config.resume:
      steps = checkpoints.steps()
      emit(f"{name}: resuming from the checkpoint at step {steps[-1]}" if steps
           else f"{name}: no checkpoint in {checkpoints.directory}; training from step 0")
  options = dict(
      epochs=epochs or config.epochs or 1, batch_size=batch_size, path=config.path, quiet=quiet, description=name,
      batch_invariant=config.batch_invariant_masks, checkpoints=checkpoints, resume=config.resume,
      compiler_options="auto" if config.tuned_xla else None, **fit_kwargs,
  )
  mesh = mesh_for(config)
  if len(seeds) == 1 or mesh is not None:
    if len(seeds) > 1 and checkpoints is not None:
      raise ConfigError("--checkpoint-every and --resume take one seed at a time with --devices; use --seeds 1.")
    results = [engine.fit(task, init(engine.run_keys(seed)["init"]), tx, data, seed=seed, mesh=mesh, **options)
               for seed in seeds]
  else:
    results = engine.fit_seeds(task, init, tx, data, seeds=seeds, **options)
  entries = [{**run_entry(name, r), "seed": s} for s, r in zip(seeds, results, strict=True)]
  return (entries[0] if len(entries) == 1 else seeds_entry(name, seeds, entries)), results


def seeds_entry(name: str, seeds: list[int], entries: list[dict[str, Any]]) -> dict[str, Any]:
  """The record entry of several seeds of one run: mean curves, per-metric summaries, each seed's entry."""
  history = {k: np.mean([e["history"][k] for e in entries], axis=0).tolist() for k in entries[0]["history"]}
  summary = {k: seed_summary([e["final"][k] for e in entries]) for k in entries[0]["final"]}
  return {
      "name": name,
      "seeds": seeds,
      "history": history,
      "final": {k: v["mean"] for k, v in summary.items()},
      "summary": summary,
      "param_sha256": [e["param_sha256"] for e in entries],
      "steps": entries[0]["steps"],
      "execution": entries[0]["execution"],
      "per_seed": entries,
  }


def seed_summary(values: list[float]) -> dict[str, Any]:
  """Mean, sample standard deviation and Student-t 95 % confidence interval of the mean."""
  from scipy import stats

  values = np.asarray(values, np.float64)
  mean, n = float(values.mean()), len(values)
  sd = float(values.std(ddof=1)) if n > 1 else 0.0
  half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else 0.0
  return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": n}


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
  """One summary line: ``name: train loss ..., train acc ..., test acc ...`` (means and 95 % CIs over seeds)."""
  if "summary" in entry:
    parts = [f"{k.replace('_', ' ')} {v['mean']:.4f} +- {v['sd']:.4f} (95% CI {v['ci95'][0]:.4f}..{v['ci95'][1]:.4f})"
             for k, v in entry["summary"].items()]
    return f"{entry['name']} ({len(entry['seeds'])} seeds): " + ", ".join(parts)
  parts = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in entry["final"].items()]
  return f"{entry['name']}: " + ", ".join(parts)


class RunRecord:
  """Accumulates ``record.json`` for one experiment run and writes it."""

  def __init__(self, experiment: Experiment, config: Config, out_dir: Path):
    self.out_dir = out_dir
    self.had_record = (out_dir / "record.json").exists()
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
    """Writes ``record.json``; a failed run next to an earlier record writes ``record-failed-<time>.json``."""
    self.data.update(extra)
    self.data["status"] = status
    self.data["wall_time_s"] = round(time.perf_counter() - self.started, 3)
    path = self.out_dir / "record.json"
    if status != "ok" and self.had_record:  # a resumed run that failed: keep the earlier record
      stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
      path = self.out_dir / f"record-failed-{stamp}.json"
    write_json(path, self.data)
    return self.data


def norm(tree) -> float:
  """The L2 norm of all leaves of ``tree`` together."""
  return float(optax.tree.norm(jax.tree.map(lambda x: x.astype(np.float32), tree)))
