"""What an experiment is (:class:`Experiment`, its :class:`Part` of the report), training its models through
:mod:`jaxdrop.training` (one seed, vmapped seeds or data-parallel devices, checkpoints in the run folder),
and running it into a folder with its record (:func:`run_recorded`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from experiments import signals
from experiments.config import Config, result_options
from experiments.data import Dataset
from experiments.errors import ConfigError
from experiments.records import RunRecord, run_entry, seeds_entry
from jaxdrop import training
from jaxdrop.errors import TrainingStopped

__all__ = ["FIT_OPTIONS", "Emit", "Experiment", "Part", "epochs_for", "fit_options", "init_linen", "linen_task",
           "mesh_for", "norm", "run_recorded", "train_run"]

log = logging.getLogger("jaxdrop")

Emit = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Part:
  """How an experiment takes part in ``python -m experiments reproduce``: its run there and its report section.

  Attributes:
    section: ``(record, seeds) -> lines``: the experiment's section of ``report.md`` (Markdown), from the
      record of its run in the suite and reproduce's ``--seeds``; figures are linked as ``<folder>/<name>``.
    options: ``seeds -> options`` of its run in the suite.
    quick: options, on top of those, of a run of seconds: what the tests run (``tests/conftest.py``).
    folder: its subfolder of the reproduce folder (default: the experiment's name).
    run: ``(out_dir, seeds, emit, quiet, **options) -> record`` for a part that is not the experiment's own
      run (E2's comparison of dropout with none); default: the experiment, run with ``options``.
  """

  section: Callable[[dict[str, Any], int], list[str]]
  options: Callable[[int], dict[str, Any]] = lambda seeds: {}
  quick: dict[str, Any] = dataclasses.field(default_factory=dict)
  folder: str | None = None
  run: Callable[..., dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What ``python -m experiments list`` shows, ``run NAME`` (and ``python experiments/eN_*.py``) runs, and
  ``reproduce`` adds to its report.

  Attributes:
    name: ``e1`` ... (the script's ``eN`` prefix).
    title: one line: the model, its regularization and recipe.
    source: the tutorial (or paper) it reproduces.
    config: its options (a :class:`~experiments.config.Config` subclass).
    run: ``(config, record, emit, quiet)``: trains, adds runs and figures to the record.
    part: its part of ``reproduce`` (``None``: not in the suite).
  """

  name: str
  title: str
  source: str
  config: type[Config]
  run: Callable[[Config, RunRecord, Emit, bool], None]
  part: Part | None = None

  @property
  def folder(self) -> str | None:
    """Its subfolder of a reproduce folder (``None``: not in the suite)."""
    return None if self.part is None else self.part.folder or self.name

  def run_part(self, out_dir: str | Path, seeds: int, emit: Emit, quiet: bool, /, **options: Any) -> dict[str, Any]:
    """Runs its part of the suite into ``out_dir`` (created if missing) and returns the part's record.

    ``seeds`` is reproduce's ``--seeds``; ``options`` go on top of the part's own (the tests' ``quick``
    ones), and may hold the experiment's own ``seeds``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if self.part.run is not None:
      return self.part.run(out_dir, seeds, emit, quiet, **options)
    return run_recorded(self, out_dir, emit=emit, quiet=quiet, **{**self.part.options(seeds), **options})


# Training-set sizes of the source tutorials' data sets, to keep their number of steps on a fallback.
NATIVE_TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def epochs_for(config: Config, data: Dataset, native: str, native_epochs: int, emit: Emit) -> int:
  """The number of epochs to run: ``--epochs`` if given, else the source tutorial's.

  When the run fell back from the source tutorial's data set ``native`` to a smaller one,
  the default becomes the number of epochs that makes as many optimizer steps
  as the source tutorial's ``native_epochs`` on ``native`` (at the configured batch size).
  """
  if config.epochs is not None:
    return config.epochs
  if data.name == native or native not in NATIVE_TRAIN_SIZES:
    return native_epochs
  steps = native_epochs * math.ceil(NATIVE_TRAIN_SIZES[native] / config.batch_size)
  epochs = math.ceil(steps / math.ceil(len(data.y_train) / config.batch_size))
  emit(f"training for {epochs} epochs on {data.name}: the source tutorial's {native_epochs} epochs on {native} are {steps}"
       f" optimizer steps at batch size {config.batch_size}")
  return epochs


def linen_task(model: nn.Module, *, loss=training.cross_entropy, penalty=None, classification=True) -> training.Task:
  """A :class:`~jaxdrop.training.Task` for a linen module with ``__call__(x, train)``."""

  def apply(params, x, train, key):
    rngs = {"dropout": key} if train else None
    return model.apply({"params": params}, x, train=train, rngs=rngs)

  return training.Task(apply, loss, penalty, classification)


def init_linen(model: nn.Module, sample: np.ndarray) -> Callable[[jax.Array], Any]:
  """``init_key -> params`` of a linen module with ``__call__(x, train)`` (dropout off)."""
  return lambda key: model.init(key, sample[:1], train=False)["params"]


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


# The fields of FitOptions: a config field of one of these names passes to the engine as it is.
FIT_OPTIONS = frozenset(f.name for f in dataclasses.fields(training.FitOptions))


def fit_options(config: Config, **overrides: Any) -> training.FitOptions:
  """The :class:`~jaxdrop.training.FitOptions` of ``config``'s fields named like FitOptions' fields, and ``overrides``.

  Example:
    >>> options = fit_options(Config(batch_invariant=True, compiler_options=None), epochs=3)
    >>> options.epochs, options.batch_size, options.batch_invariant, options.compiler_options
    (3, 256, True, None)
  """
  shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in FIT_OPTIONS}
  return training.FitOptions(**{**shared, **overrides})


def mesh_for(config: Config) -> jax.sharding.Mesh | None:
  """The data-parallel mesh of ``--devices`` (``None`` for one device)."""
  if config.devices == 1:
    return None
  devices = jax.devices()[: config.devices or None]
  return jax.sharding.Mesh(np.array(devices), ("data",))


def train_run(
    name: str,
    task: training.Task,
    init: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    data: Dataset,
    config: Config,
    record: RunRecord,
    *,
    quiet: bool,
    emit: Emit = log.info,
    epochs: int | None = None,
    batch_size: int | None = None,
    **fit_kwargs,
) -> tuple[dict[str, Any], list[training.FitResult]]:
  """Fits one model for ``config.seeds`` seeds and returns its record entry and each seed's result.

  One seed is trained by :func:`~jaxdrop.training.fit`, several by
  :func:`~jaxdrop.training.fit_seeds` (vmapped, each seed's result equal to
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
    **fit_kwargs: more :class:`~jaxdrop.training.FitOptions` fields (the config's fields of FitOptions'
      names pass as they are, see :func:`fit_options`).

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
    checkpoints = training.Checkpoints(record.out_dir / "checkpoints" / _slug(name),
                                       every_steps=config.checkpoint_every, fingerprint=fingerprint)
    if config.resume:
      steps = checkpoints.steps()
      emit(f"{name}: resuming from the checkpoint at step {steps[-1]}" if steps
           else f"{name}: no checkpoint in {checkpoints.directory}; training from step 0")
  options = fit_options(config, epochs=epochs or config.epochs or 1, batch_size=batch_size, quiet=quiet,
                        description=name, **fit_kwargs)
  saving = dict(checkpoints=checkpoints, resume=config.resume, stop=signals.requested)
  mesh = mesh_for(config)
  if len(seeds) == 1 or mesh is not None:
    if len(seeds) > 1 and checkpoints is not None:
      raise ConfigError("--checkpoint-every and --resume take one seed at a time with --devices; use --seeds 1.")
    results = [training.fit(task, init(training.run_keys(seed)["init"]), tx, data, options, seed=seed, mesh=mesh,
                            **saving) for seed in seeds]
  else:
    results = training.fit_seeds(task, init, tx, data, options, seeds=seeds, **saving)
  entries = [{**run_entry(name, r), "seed": s} for s, r in zip(seeds, results, strict=True)]
  return (entries[0] if len(entries) == 1 else seeds_entry(name, seeds, entries)), results


def norm(tree) -> float:
  """The L2 norm of all leaves of ``tree`` together."""
  return float(optax.tree.norm(jax.tree.map(lambda x: x.astype(np.float32), tree)))


def run_recorded(
    experiment: Experiment, out_dir: str | Path, *, emit: Emit | None = None, quiet: bool = True, **options: Any
) -> dict[str, Any]:
  """Runs ``experiment`` into ``out_dir`` (which must exist) and returns its record.

  Args:
    experiment: what to run.
    out_dir: output folder for ``record.json`` and the PNGs.
    emit: receives the summary lines (default: logging).
    quiet: no progress bar.
    **options: config fields (``epochs=2``, ``dataset="digits"``, ...).

  Returns:
    The record, also written to ``out_dir/record.json``. A run that raises
    still writes its record, with ``status`` ``"failed"`` and the error,
    unless it is a :class:`~experiments.errors.ConfigError` raised before any
    model was trained (a usage error: nothing to record).
  """
  fields = {f.name for f in dataclasses.fields(experiment.config)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {experiment.name}; valid:"
                      f" {', '.join(sorted(fields))}.")
  config = experiment.config(**options)
  config.validate()
  record = RunRecord(experiment.name, experiment.title, experiment.source, config, Path(out_dir))
  emit = emit or log.info
  try:
    experiment.run(config, record, emit, quiet)
  except ConfigError as e:
    if record.data["runs"]:
      record.finish("failed", error=f"ConfigError: {e}")
    raise
  except BaseException as e:
    asked = f" on {signals.pending().name}" if isinstance(e, TrainingStopped) and signals.requested() else ""
    record.finish("failed", error=f"{type(e).__name__}{asked}: {e}")
    raise
  return record.finish()
