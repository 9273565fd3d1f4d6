"""A small training engine: a jit-compiled train step, a deterministic eval step,
and whole epochs in one compiled call.

Randomness is a pure function of the run's seed: the dropout key of a step is
``fold_in(dropout_key, state.step)`` (so a resumed run draws the same masks)
and the shuffle of an epoch is drawn on the device from
``fold_in(shuffle_key, epoch)``. Epochs run either as one ``lax.scan`` over
the batches (``path="scan"``, the data on the device and the state buffers
donated) or as a Python loop over the same jitted step (``path="loop"``, for
debugging); both see the same batches, masks and updates.

A batch that would be short (the data set size is not a multiple of the batch
size) is padded with weight-0 rows, so its loss is the mean over its real
examples, exactly as PyTorch's ``DataLoader`` with ``drop_last=False``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState
from tqdm.auto import tqdm

from jaxdrop.errors import JaxdropError

__all__ = [
    "EpochPath",
    "FitResult",
    "Task",
    "TrainingDivergedError",
    "TrainState",
    "batch_plan",
    "cross_entropy",
    "evaluate",
    "fit",
    "fit_seeds",
    "half_squared_error",
    "choose_path",
    "make_train_epoch",
    "make_train_step",
    "run_keys",
    "squared_error",
]

Params = Any
EpochPath = Literal["auto", "scan", "loop"]


class TrainingDivergedError(JaxdropError, FloatingPointError):
  """The training loss became NaN or infinite."""

  def __init__(self, step: int, loss: float):
    self.step, self.loss = step, loss
    super().__init__(
        f"the training loss became {loss} at step {step}; lower the learning rate or check the"
        " inputs (the run stopped; nothing after this step was kept)."
    )


@dataclasses.dataclass(frozen=True)
class Task:
  """What is trained.

  Attributes:
    apply: ``(params, x, train, key) -> outputs``; ``key`` is ``None`` when
      ``train`` is false (evaluation is deterministic).
    loss: ``(outputs, targets) -> per-example loss``.
    penalty: optional ``params -> scalar`` added to the batch's mean loss
      (an L1/L2 penalty); reported losses exclude it.
    classification: report accuracy (outputs are logits, targets labels).
  """

  apply: Callable[[Params, jax.Array, bool, jax.Array | None], jax.Array]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  penalty: Callable[[Params], jax.Array] | None = None
  classification: bool = True


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels (``nn.CrossEntropyLoss``)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def half_squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example ``sum (pred - target)**2 / 2`` (d2l's ``squared_loss``)."""
  return jnp.sum(jnp.square(pred - target), axis=-1) / 2


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example ``mean (pred - target)**2`` (``nn.MSELoss(reduction="none")``)."""
  return jnp.mean(jnp.square(pred - target), axis=-1)


def run_keys(seed: int | jax.Array) -> dict[str, jax.Array]:
  """The run's independent streams, all derived from ``seed``: init, dropout, shuffle, data.

  ``seed`` may be traced (``jax.vmap(run_keys)(seeds)`` gives the streams of many runs).
  """
  root = jax.random.key(seed)
  return {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "dropout", "shuffle", "data"))}


def batch_plan(key: jax.Array | None, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Row indices and weights of every batch of an epoch.

  Args:
    key: shuffle key, or ``None`` for the data's own order.
    n: number of examples.
    batch_size: rows per batch.

  Returns:
    ``(indices, weights)``, both ``(ceil(n / batch_size), batch_size)``;
    padding rows point at row 0 with weight 0.
  """
  order = jnp.arange(n, dtype=jnp.int32) if key is None else jax.random.permutation(key, n).astype(jnp.int32)
  num_batches = math.ceil(n / batch_size)
  pad = num_batches * batch_size - n
  order = jnp.concatenate([order, jnp.zeros(pad, jnp.int32)])
  weights = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
  return order.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def _batch_sums(task: Task, outputs, targets, weights) -> dict[str, jax.Array]:
  per_example = task.loss(outputs, targets)
  sums = {"loss_sum": jnp.sum(per_example * weights), "count": jnp.sum(weights)}
  if task.classification:
    correct = (jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32)
    sums["correct"] = jnp.sum(correct * weights)
  return sums


def make_train_step(task: Task) -> Callable:
  """``(state, x, y, indices, weights, dropout_key) -> (state, metrics)`` for one batch (not jitted).

  The batch is gathered from the full arrays ``x`` and ``y`` by ``indices``;
  the step's dropout key is ``fold_in(dropout_key, state.step)``.
  """

  def step(state: TrainState, x, y, indices, weights, dropout_key):
    xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)
    key = jax.random.fold_in(dropout_key, state.step)

    def objective(params):
      outputs = task.apply(params, xb, True, key)
      sums = _batch_sums(task, outputs, yb, weights)
      loss = sums["loss_sum"] / sums["count"]
      total = loss + task.penalty(params) if task.penalty is not None else loss
      return total, (loss, sums)

    grads, (loss, sums) = jax.grad(objective, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, **sums}

  return step


def _has_convolution(jaxpr) -> bool:
  """Whether ``jaxpr`` (or one nested in it: scan, cond, custom_vjp, ...) convolves."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      return True
    if any(_has_convolution(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params)):
      return True
  return False


def choose_path(task: Task, params: Params, sample: jax.Array) -> tuple[str, str]:
  """The epoch path for ``task`` on the current backend, and why.

  ``"scan"`` (a whole epoch in one compiled call) is fastest for dense and
  recurrent models. On XLA:CPU the backward convolutions inside a loop body
  lose their fast path (PERF_NOTES: 632 ms/step in a scan vs 112 ms jitted for
  E4's CNN), so convolutional models run the jitted step from Python there.
  """
  jaxpr = jax.make_jaxpr(lambda p, x: task.apply(p, x, True, jax.random.key(0)))(params, sample[:1])
  if jax.default_backend() == "cpu" and _has_convolution(jaxpr.jaxpr):
    return "loop", "convolutions on XLA:CPU are slow inside a compiled loop"
  return "scan", "whole epoch in one compiled call"




def make_train_epoch(task: Task, batch_size: int, path: str = "scan", *, seeds_axis: bool = False) -> Callable:
  """``(state, x, y, shuffle_key, dropout_key) -> (state, per-step metrics)`` for one epoch.

  Args:
    task: what is trained.
    batch_size: rows per batch.
    path: ``"scan"``: one compiled call (``lax.scan`` over the batches, the
      state donated); ``"loop"``: the same jitted step called from Python.
    seeds_axis: the state and both keys carry a leading axis of independent
      runs (seeds) trained together under ``vmap``; ``x`` and ``y`` are shared.

  ``shuffle_key=None`` keeps the data's order.
  """
  step = make_train_step(task)

  def plan(shuffle_key, n):
    one = lambda k: batch_plan(k, n, batch_size)
    return jax.vmap(one)(shuffle_key) if seeds_axis and shuffle_key is not None else one(shuffle_key)

  if path == "scan":

    def one_run(state, x, y, indices, weights, dropout_key):
      return jax.lax.scan(lambda s, b: step(s, x, y, *b, dropout_key), state, (indices, weights))

    def epoch(state, x, y, shuffle_key, dropout_key):
      indices, weights = plan(shuffle_key, x.shape[0])
      if not seeds_axis:
        return one_run(state, x, y, indices, weights, dropout_key)
      plan_axis = None if shuffle_key is None else 0
      runs = jax.vmap(one_run, in_axes=(0, None, None, plan_axis, plan_axis, 0))
      return runs(state, x, y, indices, weights, dropout_key)

    return jax.jit(epoch, donate_argnums=0)
  if path != "loop":
    raise ValueError(f"path must be 'auto', 'scan' or 'loop', got {path!r}.")
  jit_plan = jax.jit(plan, static_argnums=1)
  plan_axis = 0
  runs_step = jax.vmap(step, in_axes=(0, None, None, plan_axis, plan_axis, 0)) if seeds_axis else step
  jit_step = jax.jit(runs_step, donate_argnums=0)

  def loop_epoch(state, x, y, shuffle_key, dropout_key):
    indices, weights = jit_plan(shuffle_key, x.shape[0])
    if seeds_axis and shuffle_key is None:  # one plan, shared by the runs
      num_runs = dropout_key.shape[0]
      indices, weights = (jnp.broadcast_to(a, (num_runs, *a.shape)) for a in (indices, weights))
    history = []
    for b in range(indices.shape[-2]):
      state, metrics = jit_step(state, x, y, indices[..., b, :], weights[..., b, :], dropout_key)
      history.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m, axis=-1), *history)

  return loop_epoch


def evaluate(task: Task, params: Params, x, y, batch_size: int = 1024) -> dict[str, float]:
  """Deterministic loss (and accuracy) over a whole data set, in batches.

  Returns:
    ``{"loss": mean loss, "accuracy": fraction correct}`` (no accuracy for
    regression tasks).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  return _summarize(task, _evaluate_sums(task, params, x, y, min(batch_size, x.shape[0])))


@jax.jit(static_argnums=(0, 4))
def _evaluate_sums(task: Task, params, x, y, batch_size: int):
  indices, weights = batch_plan(None, x.shape[0], batch_size)

  def body(totals, batch):
    idx, w = batch
    outputs = task.apply(params, jnp.take(x, idx, axis=0), False, None)
    sums = _batch_sums(task, outputs, jnp.take(y, idx, axis=0), w)
    return jax.tree.map(jnp.add, totals, sums), None

  zeros = {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "count", "correct")}
  if not task.classification:
    del zeros["correct"]
  return jax.lax.scan(body, zeros, (indices, weights))[0]


def _summarize(task: Task, sums) -> dict[str, Any]:
  """Mean loss and accuracy from summed metrics (Python floats, or lists with a runs axis)."""
  out = {"loss": sums["loss_sum"] / sums["count"]}
  if task.classification:
    out["accuracy"] = sums["correct"] / sums["count"]
  return jax.tree.map(lambda v: np.asarray(v).tolist(), out)


@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns for one run: the final state and the per-epoch history."""

  state: TrainState
  history: dict[str, list[float]]
  step_losses: list[np.ndarray]  # per epoch, the training loss of every step
  execution: dict[str, Any]  # the epoch path that ran, and why


def fit(
    task: Task,
    params: Params,
    tx: optax.GradientTransformation,
    data,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    path: EpochPath = "auto",
    eval_every: int = 1,
    eval_train: bool = False,
    quiet: bool = False,
    description: str = "",
) -> FitResult:
  """Trains ``params`` on ``data`` and evaluates after each epoch.

  Args:
    task: the model and loss (:class:`Task`).
    params: initial parameters (left untouched).
    tx: the optimizer.
    data: anything with ``x_train, y_train, x_test, y_test`` arrays.
    epochs: number of passes over the training set.
    batch_size: training batch size.
    seed: the run's seed (see :func:`run_keys`).
    shuffle: reshuffle the training set every epoch.
    path: ``"scan"`` (one compiled call per epoch), ``"loop"`` (the jitted
      step from Python) or ``"auto"`` (:func:`choose_path`).
    eval_every: evaluate every this many epochs (and after the last).
    eval_train: report the training loss/accuracy of a deterministic pass over
      the training set (as d2l's ``evaluate_loss``) instead of the running
      average of the training steps (as d2l's ``train_epoch``).
    quiet: no progress bar (it is also off when stderr is not a terminal).
    description: label of the progress bar.

  Returns:
    A :class:`FitResult`; ``history`` has ``epoch``, ``train_loss``,
    ``test_loss`` (and ``train_acc``, ``test_acc`` for classification) for the
    evaluated epochs.

  Raises:
    TrainingDivergedError: if a training loss is NaN or infinite.
  """
  options = dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle, path=path, eval_every=eval_every,
                 eval_train=eval_train, quiet=quiet, description=description)
  return _fit(task, params, tx, data, [seed], batched=False, **options)[0]


def fit_seeds(
    task: Task,
    init: Callable[[jax.Array], Params],
    tx: optax.GradientTransformation,
    data,
    *,
    seeds: list[int],
    epochs: int,
    batch_size: int,
    **options,
) -> list[FitResult]:
  """Trains one run per seed, all at once: one compiled program ``vmap``-ped over the seeds.

  Each run's initialization (``init(run_keys(seed)["init"])``), shuffles and
  dropout masks are those of :func:`fit` with that seed, so each result equals
  the seed run alone, up to the rounding of batched kernels.

  Args:
    task: the model and loss.
    init: ``init_key -> params``.
    tx: the optimizer.
    data: shared by all runs.
    seeds: one run per seed.
    epochs: number of passes over the training set.
    batch_size: training batch size.
    **options: the other keyword arguments of :func:`fit`.

  Returns:
    One :class:`FitResult` per seed, in order.
  """
  params = jax.jit(jax.vmap(lambda s: init(run_keys(s)["init"])))(jnp.asarray(seeds))
  return _fit(task, params, tx, data, list(seeds), batched=True, epochs=epochs, batch_size=batch_size, **options)


def _fit(task, params, tx, data, seeds, *, batched, epochs, batch_size, shuffle=True, path="auto",
         eval_every=1, eval_train=False, quiet=False, description=""):
  """:func:`fit` for one run (``batched=False``) or :func:`fit_seeds` (a leading runs axis)."""
  # Batched keys come from vmap: jnp.stack of typed keys trips jax's key-reuse checker.
  keys = jax.vmap(run_keys)(jnp.asarray(seeds)) if batched else run_keys(seeds[0])
  shuffle_keys, dropout_keys = keys["shuffle"], keys["dropout"]
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if batched else jax.random.fold_in
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  reason = f"requested path={path!r}"
  if path == "auto":
    path, reason = choose_path(task, jax.tree.map(lambda a: a[0], params) if batched else params, x_train)
  run_epoch = make_train_epoch(task, batch_size, path, seeds_axis=batched)
  create = lambda p: TrainState.create(apply_fn=task.apply, params=p, tx=tx)
  # Epochs donate the state's buffers: copy, so that the caller's params stay valid.
  params = jax.tree.map(jnp.copy, params)
  state = jax.jit(jax.vmap(create))(params) if batched else create(params)
  sums_fn = jax.vmap(_evaluate_sums, in_axes=(None, 0, None, None, None)) if batched else _evaluate_sums
  evaluate_sums = jax.jit(sums_fn, static_argnums=(0, 4)) if batched else _evaluate_sums
  histories = [_empty_history(task) for _ in seeds]
  step_losses: list[list[np.ndarray]] = [[] for _ in seeds]
  bar = tqdm(range(1, epochs + 1), desc=description, disable=quiet or not sys.stderr.isatty(), leave=False)
  for epoch in bar:
    first_step = int(np.max(state.step))
    state, metrics = run_epoch(state, x_train, y_train, fold(shuffle_keys, epoch) if shuffle else None, dropout_keys)
    losses = np.asarray(metrics["loss"]).reshape(len(seeds), -1)
    for run, run_losses in enumerate(losses):
      if not np.all(np.isfinite(run_losses)):
        bad = int(np.argmin(np.isfinite(run_losses)))
        raise TrainingDivergedError(first_step + bad + 1, float(run_losses[bad]))
      step_losses[run].append(run_losses)
    if epoch % eval_every and epoch != epochs:
      continue
    test = _summarize(task, evaluate_sums(task, state.params, x_test, y_test, min(1024, x_test.shape[0])))
    if eval_train:
      train = _summarize(task, evaluate_sums(task, state.params, x_train, y_train, min(1024, x_train.shape[0])))
    else:  # the running average over this epoch's training steps
      train = _summarize(task, {k: jnp.sum(v, axis=-1) for k, v in metrics.items() if k != "loss"})
    for run, history in enumerate(histories):
      pick = (lambda v: v[run]) if batched else (lambda v: v)
      history["epoch"].append(epoch)
      history["train_loss"].append(pick(train["loss"]))
      history["test_loss"].append(pick(test["loss"]))
      if task.classification:
        history["train_acc"].append(pick(train["accuracy"]))
        history["test_acc"].append(pick(test["accuracy"]))
    bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in histories[0].items() if k != "epoch"})
  execution = {"path": path, "reason": reason, "runs_vmapped": len(seeds) if batched else 1}
  states = [jax.tree.map(lambda a: a[i], state) for i in range(len(seeds))] if batched else [state]
  return [FitResult(st, h, sl, execution) for st, h, sl in zip(states, histories, step_losses, strict=True)]


def _empty_history(task: Task) -> dict[str, list[float]]:
  history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": []}
  if task.classification:
    history.update(train_acc=[], test_acc=[])
  return history
