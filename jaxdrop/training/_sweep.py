"""``fit_sweep``: a grid of runs (hyperparameters x seeds x data splits) in one compiled, vmapped program.

Each run is what :func:`~jaxdrop.training.fit` trains for its seed, on its split,
with ``task_for(hparams)`` and ``tx_for(hparams)``: the same initialization
(``init(run_keys(seed)["init"])``), shuffles and dropout masks. The
hyperparameters are traced, so one program serves every point: a dropout rate
(jaxdrop's rates may be traced), a weight decay or a learning rate (optax's
transforms take traced scalars), any float the task reads (R-Drop's
``Task.r_drop_alpha`` too: a traced alpha takes the two passes at every point,
``0`` included).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from jaxdrop.training._evaluate import evaluate_sums
from jaxdrop.training._options import FitOptions
from jaxdrop.training._steps import make_train_step
from jaxdrop.training._task import Task, batch_plan, run_keys, without_r_drop

__all__ = ["SweepResult", "fit_sweep", "grid"]

_NO_TX = optax.identity()  # what a state holds between steps: each step builds its point's optimizer


@dataclasses.dataclass
class SweepResult:
  """One run of :func:`fit_sweep`.

  Attributes:
    config: the run's hyperparameters as given (it trained with them as float32), ``seed`` and ``split``
      (its index, or ``None``).
    params: its final parameters.
    history: as :func:`~jaxdrop.training.fit`'s: ``epoch``, ``train_loss``, ``test_loss`` (and
      ``train_acc``, ``test_acc``) of the evaluated epochs; the training metrics are the running means
      over each epoch's steps.
    diverged_at: the first optimizer step (1-based) whose training loss was not finite, else ``None``.
  """

  config: dict[str, Any]
  params: Any
  history: dict[str, list[float]]
  diverged_at: int | None


def grid(**axes: Sequence[float]) -> dict[str, np.ndarray]:
  """Every combination of the values of ``axes`` (the last axis fastest), as one array per name.

  Example:
    >>> {k: v.tolist() for k, v in grid(rate=[0.1, 0.5], decay=[0.0, 1e-4]).items()}
    {'rate': [0.1, 0.1, 0.5, 0.5], 'decay': [0.0, 0.0001, 0.0, 0.0001]}
  """
  if not axes:
    raise ValueError("grid: give at least one axis, e.g. grid(rate=[0.1, 0.5]).")
  points = list(itertools.product(*axes.values()))
  return {name: np.asarray([p[i] for p in points], np.float64) for i, name in enumerate(axes)}


def fit_sweep(
    task_for: Callable[[dict[str, jax.Array]], Task],
    init: Callable[[jax.Array], Any],
    tx_for: Callable[[dict[str, jax.Array]], optax.GradientTransformation],
    data,
    options: FitOptions | None = None,
    *,
    hparams: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    splits: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_size: int | None = None,
    **option_fields: Any,
) -> list[SweepResult]:
  """Trains every (point, seed, split) of a grid in one compiled program, ``vmap``-ped over the runs.

  Args:
    task_for: ``hparams -> Task``, where ``hparams`` maps each name of
      ``hparams`` to the run's value (a traced float32 scalar).
    init: ``init_key -> params``, called once per seed (op by op, before the compiled program).
    tx_for: ``hparams -> optimizer``; its state's structure must not depend
      on the values (as optax's transforms with scalar hyperparameters).
    data: ``x_train, y_train, x_test, y_test`` arrays.
    options: a :class:`FitOptions` (``epochs``, ``batch_size``, ``shuffle``,
      ``eval_every``; or give them as keywords). Its execution fields do not
      apply: a sweep is one ``lax.scan`` over its epochs.
    hparams: equal-length values, one per grid point (see :func:`grid`).
    seeds: each point trains once per seed.
    splits: ``(train_indices, test_indices)``, integer arrays of shape
      ``(splits, n_train)`` and ``(splits, n_test)`` into ``data``'s training
      and test arrays (equal sizes: one program); each point and seed trains
      once per split. ``None``: the whole of ``data``.
    chunk_size: at most this many runs per compiled call, to bound memory
      (the program is compiled once; the last chunk is padded). ``None``: all.
    **option_fields: :class:`FitOptions` fields.

  Returns:
    One :class:`SweepResult` per run, points outermost, then seeds, then splits.

  Example:
    >>> import jax.numpy as jnp, optax, types
    >>> from jaxdrop.training import Task, fit_sweep, grid, half_squared_error
    >>> x = jnp.linspace(-1, 1, 64)[:, None]
    >>> data = types.SimpleNamespace(x_train=x, y_train=3 * x, x_test=x, y_test=3 * x)
    >>> task = Task(lambda p, x, train, key: x * p["w"], half_squared_error, classification=False)
    >>> results = fit_sweep(lambda h: task, lambda key: {"w": jnp.zeros(())}, lambda h: optax.sgd(h["lr"]),
    ...                     data, epochs=5, batch_size=16, hparams=grid(lr=[0.01, 0.5]), seeds=[0])
    >>> slow, fast = results
    >>> slow.config["lr"], fast.config["lr"], slow.history["test_loss"][-1] > fast.history["test_loss"][-1]
    (0.01, 0.5, True)
  """
  options = FitOptions(**option_fields) if options is None else dataclasses.replace(options, **option_fields)
  if options.batch_invariant:
    raise ValueError("fit_sweep draws each step's masks from the run's key and step, as fit does by default;"
                     " batch_invariant=True is not supported here (use fit or fit_seeds).")
  if options.average is not None:
    raise ValueError("fit_sweep does not take FitOptions.average (weight averaging); train with fit or"
                     " fit_seeds, which evaluate the averaged weights.")
  names, values = _checked_points(hparams)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("fit_sweep: seeds is empty; give at least one seed, e.g. seeds=[0].")
  arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
  x_train, y_train, x_test, y_test = (jnp.asarray(a) for a in arrays)
  train_idx, test_idx = _checked_splits(splits, x_train.shape[0], x_test.shape[0])
  runs = [(p, s, k) for p in range(len(values)) for s in seeds for k in range(train_idx.shape[0])]
  chunk = len(runs) if chunk_size is None else chunk_size
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"fit_sweep: chunk_size must be a positive integer or None, got {chunk_size!r}.")
  chunk = min(chunk, len(runs))
  # Each seed's parameters once, outside the program and op by op, as a caller of fit would make them: the
  # random kernels compile once per shape and process (inside the vmapped program each of them took seconds).
  initial = {s: init(run_keys(s)["init"]) for s in dict.fromkeys(seeds)}
  program = _program(task_for, tx_for, names, options, train_idx.shape[1], test_idx.shape[1])
  results = []
  for first in range(0, len(runs), chunk):
    part = runs[first:first + chunk]
    part = part + [part[-1]] * (chunk - len(part))  # the last chunk padded with its last run
    point = {n: jnp.asarray(values[[p for p, _, _ in part], i], jnp.float32) for i, n in enumerate(names)}
    params = jax.tree.map(lambda *leaves: np.stack(leaves), *[initial[s] for _, s, _ in part])  # no compile
    seed = jnp.asarray([s for _, s, _ in part], jnp.int32)
    split = np.asarray([k for _, _, k in part])
    out = program(params, point, seed, jnp.asarray(train_idx[split]), jnp.asarray(test_idx[split]), x_train,
                  y_train, x_test, y_test)
    out = jax.device_get(out)
    for r, (p, s, k) in enumerate(runs[first:first + chunk]):
      results.append(_result(out, r, {n: float(values[p, i]) for i, n in enumerate(names)}, s,
                             None if splits is None else k, options))
  return results


def _checked_points(hparams) -> tuple[list[str], np.ndarray]:
  if not isinstance(hparams, Mapping) or not hparams:
    raise ValueError("fit_sweep: hparams must be a non-empty mapping of names to equal-length values, e.g."
                     " grid(rate=[0.1, 0.5]).")
  names = list(hparams)
  columns = [np.asarray(hparams[n], np.float64).reshape(-1) for n in names]
  lengths = {n: len(c) for n, c in zip(names, columns, strict=True)}
  if len(set(lengths.values())) != 1 or not columns[0].size:
    raise ValueError(f"fit_sweep: every hparams entry needs the same, non-zero number of values (one per"
                     f" point); got {lengths}. grid(...) builds them from axes.")
  return names, np.stack(columns, axis=1)


def _checked_splits(splits, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
  if splits is None:
    return np.arange(n_train)[None], np.arange(n_test)[None]
  if not (isinstance(splits, (tuple, list)) and len(splits) == 2):
    raise ValueError("fit_sweep: splits must be (train_indices, test_indices), two integer arrays of shape"
                     " (splits, n_train) and (splits, n_test).")
  train, test = (np.asarray(a) for a in splits)
  for name, a, n in (("train", train, n_train), ("test", test, n_test)):
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer) or a.shape[1] == 0:
      raise ValueError(f"fit_sweep: the {name} indices of splits must be a 2-D integer array (splits, size),"
                       f" got {a.dtype} of shape {a.shape}.")
    if a.min() < 0 or a.max() >= n:
      raise ValueError(f"fit_sweep: the {name} indices of splits must lie in 0..{n - 1} (data's {name} arrays"
                       f" have {n} rows), got {a.min()}..{a.max()}.")
  if train.shape[0] != test.shape[0]:
    raise ValueError(f"fit_sweep: splits has {train.shape[0]} training and {test.shape[0]} test index sets;"
                     " give one of each per split.")
  return train, test


def _program(task_for, tx_for, names, options: FitOptions, n_train: int, n_test: int):
  """The jitted ``(initial params, points, seeds, train_idx, test_idx, data...) -> per-run outputs`` of a
  chunk."""
  epochs, batch_size = options.epochs, options.batch_size

  def one_run(params, point, seed, train_idx, test_idx, x_train, y_train, x_test, y_test):
    task, tx = task_for(point), tx_for(point)
    eval_task = without_r_drop(task)  # one deterministic pass; hashable also when a point sets R-Drop's alpha
    keys = run_keys(seed, options.mask_generator)
    state = TrainState.create(apply_fn=None, params=params, tx=tx).replace(tx=_NO_TX)
    step = make_train_step(task)

    def train_step(state, batch):
      indices, weights = batch
      rows = train_idx[indices]  # the plan's rows of the split, as rows of the training arrays
      state, metrics = step(state.replace(tx=tx), x_train, y_train, rows, weights, keys["dropout"])
      return state.replace(tx=_NO_TX), metrics

    def epoch(state, number):
      shuffle = jax.random.fold_in(keys["shuffle"], number) if options.shuffle else None
      state, metrics = jax.lax.scan(train_step, state, batch_plan(shuffle, n_train, batch_size))
      evaluated = (number % options.eval_every == 0) | (number == epochs)
      zeros = {"loss_sum": 0.0, "count": 1.0, **({"correct": 0.0} if task.classification else {})}
      test = jax.lax.cond(evaluated, lambda p: evaluate_sums(eval_task, p, x_test[test_idx], y_test[test_idx],
                                                            min(1024, n_test)),
                          lambda p: {k: jnp.float32(v) for k, v in zeros.items()}, state.params)
      return state, ({k: jnp.sum(v) for k, v in metrics.items() if k != "loss"}, metrics["loss"], test)

    state, (train, losses, test) = jax.lax.scan(epoch, state, jnp.arange(1, epochs + 1, dtype=jnp.int32))
    return state.params, train, losses, test

  runs = jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0, None, None, None, None))
  return jax.jit(runs)


def _result(out, r: int, point: dict, seed: int, split, options: FitOptions) -> SweepResult:
  params, train, losses, test = jax.tree.map(lambda a: a[r], out)
  classification = "correct" in train
  last = options.epochs
  eval_epochs = [e for e in range(1, last + 1) if e % options.eval_every == 0 or e == last]
  history: dict[str, list[Any]] = {"epoch": eval_epochs, "train_loss": [], "test_loss": []}
  if classification:
    history.update(train_acc=[], test_acc=[])
  for e in eval_epochs:
    i = e - 1
    history["train_loss"].append(float(train["loss_sum"][i] / train["count"][i]))
    history["test_loss"].append(float(test["loss_sum"][i] / test["count"][i]))
    if classification:
      history["train_acc"].append(float(train["correct"][i] / train["count"][i]))
      history["test_acc"].append(float(test["correct"][i] / test["count"][i]))
  finite = np.isfinite(np.asarray(losses).reshape(-1))
  diverged = None if finite.all() else int(np.argmin(finite)) + 1
  return SweepResult({**point, "seed": seed, "split": split}, params, history, diverged)
