"""Training an experiment's model through :mod:`jaxdrop.training`: one seed, vmapped seeds or
data-parallel devices, with checkpoints in the run folder."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax

from experiments.config import Config, result_options
from experiments.data import Dataset
from experiments.records import RunRecord, run_entry, seeds_entry
from jaxdrop import training
from jaxdrop.errors import ConfigError

__all__ = ["Emit", "Experiment", "epochs_for", "init_linen", "linen_task", "mesh_for", "norm", "train_run"]

log = logging.getLogger("jaxdrop")

Emit = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A registry entry: what ``python -m experiments list`` shows and ``python -m experiments run NAME`` runs."""

  name: str
  title: str
  source: str
  config: type[Config]
  run: Callable[[Config, "RunRecord", Emit, bool], None]


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
    record: "RunRecord",
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
    **fit_kwargs: more :class:`~jaxdrop.training.FitOptions` fields.

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
  options = training.FitOptions(
      epochs=epochs or config.epochs or 1, batch_size=batch_size, path=config.path, quiet=quiet, description=name,
      batch_invariant=config.batch_invariant_masks, compiler_options="auto" if config.tuned_xla else None,
      **fit_kwargs,
  )
  saving = dict(checkpoints=checkpoints, resume=config.resume)
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
