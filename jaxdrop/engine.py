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

from jaxdrop.checkpoints import Checkpoints
from jaxdrop.errors import CheckpointMismatchError, TrainingDivergedError

__all__ = [
    "EpochPath",
    "FitResult",
    "Task",
    "TrainingDivergedError",
    "TrainState",
    "batch_plan",
    "apply_per_example",
    "cross_entropy",
    "evaluate",
    "example_keys",
    "fit",
    "fit_seeds",
    "half_squared_error",
    "choose_compiler_options",
    "choose_path",
    "make_train_epoch",
    "make_train_step",
    "run_keys",
    "squared_error",
]

Params = Any
EpochPath = Literal["auto", "scan", "loop"]


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


def example_keys(dropout_key: jax.Array, epoch: jax.Array, indices: jax.Array) -> jax.Array:
  """Per-example dropout keys: ``fold_in(fold_in(dropout_key, epoch), index)`` for each data-set index.

  They depend on the run's key, the epoch and each example's position in the
  data set only, so an example's masks do not change with the batch size, the
  batch's other examples or the number of devices. Layers draw their own
  streams from an example's key (flax folds in the module path; the scratch
  models split it), so every layer's mask differs.
  """
  epoch_key = jax.random.fold_in(dropout_key, epoch)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(epoch_key, indices)


def apply_per_example(task: Task, params: Params, xb: jax.Array, keys: jax.Array) -> jax.Array:
  """The training forward pass with one dropout key per example (``vmap`` over the batch)."""
  return jax.vmap(lambda xi, ki: task.apply(params, xi[None], True, ki)[0])(xb, keys)


def make_train_step(task: Task, *, batch_invariant: bool = False, batch_sharding=None) -> Callable:
  """``(state, x, y, indices, weights, dropout_key) -> (state, metrics)`` for one batch (not jitted).

  The batch is gathered from the full arrays ``x`` and ``y`` by ``indices``.
  The step's dropout key is ``fold_in(dropout_key, state.step)``; with
  ``batch_invariant`` each example gets its own key instead
  (:func:`example_keys`, from the epoch and its data-set index).
  ``batch_sharding`` (a ``NamedSharding``) splits the batch over devices.
  """

  def step(state: TrainState, x, y, indices, weights, dropout_key):
    if batch_sharding is not None:
      indices, weights = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (indices, weights))
    xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)
    if batch_sharding is not None:
      xb, yb = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (xb, yb))
    if batch_invariant:
      steps_per_epoch = math.ceil(x.shape[0] / indices.shape[0])
      keys = example_keys(dropout_key, state.step // steps_per_epoch, indices)
      forward = lambda params: apply_per_example(task, params, xb, keys)
    else:
      key = jax.random.fold_in(dropout_key, state.step)
      forward = lambda params: task.apply(params, xb, True, key)

    def objective(params):
      outputs = forward(params)
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


# XLA:CPU options that make convolutional train steps about 1.6x faster (E4: 46 -> 28 ms a step):
# YNNPACK takes over the dot products and convolutions. They slow dense MLPs down a little, so they are
# set per compiled function (``jax.jit(compiler_options=...)``), for convolutional models on CPU only.
CPU_CONV_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def _convolves_on_cpu(task: Task, params: Params, sample: jax.Array) -> bool:
  """Whether ``task``'s training forward pass convolves and runs on XLA:CPU (traces it once)."""
  if jax.default_backend() != "cpu":
    return False
  jaxpr = jax.make_jaxpr(lambda p, x: task.apply(p, x, True, jax.random.key(0)))(params, sample[:1])
  return _has_convolution(jaxpr.jaxpr)


def _auto_path(convolves_on_cpu: bool) -> tuple[str, str]:
  if convolves_on_cpu:
    return "loop", "convolutions on XLA:CPU are slow inside a compiled loop"
  return "scan", "whole epoch in one compiled call"


def _auto_compiler_options(convolves_on_cpu: bool) -> dict[str, str]:
  return dict(CPU_CONV_COMPILER_OPTIONS) if convolves_on_cpu else {}


def choose_path(task: Task, params: Params, sample: jax.Array) -> tuple[str, str]:
  """The epoch path for ``task`` on the current backend, and why.

  ``"scan"`` (a whole epoch in one compiled call) is fastest for dense and
  recurrent models. On XLA:CPU the backward convolutions inside a loop body
  lose their fast path (``jaxdrop bench --sections conv``: E4's step takes
  about 20x longer in a scan than jitted alone), so convolutional models run
  the jitted step from Python there.
  """
  return _auto_path(_convolves_on_cpu(task, params, sample))


def choose_compiler_options(task: Task, params: Params, sample: jax.Array) -> dict[str, str]:
  """XLA options for ``task``'s compiled steps: :data:`CPU_CONV_COMPILER_OPTIONS` for convolutional models on CPU."""
  return _auto_compiler_options(_convolves_on_cpu(task, params, sample))


def make_train_epoch(
    task: Task,
    batch_size: int,
    path: str = "scan",
    *,
    seeds_axis: bool = False,
    batch_invariant: bool = False,
    batch_sharding=None,
    compiler_options: dict[str, str] | None = None,
) -> Callable:
  """``(state, x, y, shuffle_key, dropout_key, start=0, count=None) -> (state, per-step metrics)``.

  Runs steps ``start, ..., start + count - 1`` of an epoch (all of them by
  default); the epoch's batches are drawn from ``shuffle_key``
  (``None`` keeps the data's order), so an epoch cut into pieces sees the same
  batches as one run whole.

  Args:
    task: what is trained.
    batch_size: rows per batch.
    path: ``"scan"``: one compiled call (``lax.scan`` over the batches, the
      state donated); ``"loop"``: the same jitted step called from Python.
    seeds_axis: the state and both keys carry a leading axis of independent
      runs (seeds) trained together under ``vmap``; ``x`` and ``y`` are shared.
    batch_invariant: per-example dropout keys (:func:`example_keys`).
    batch_sharding: a ``NamedSharding`` that splits each batch over devices.
    compiler_options: XLA options for the compiled step or epoch
      (e.g. :data:`CPU_CONV_COMPILER_OPTIONS`).
  """
  step = make_train_step(task, batch_invariant=batch_invariant, batch_sharding=batch_sharding)

  def plan(shuffle_key, n):
    one = lambda k: batch_plan(k, n, batch_size)
    return jax.vmap(one)(shuffle_key) if seeds_axis and shuffle_key is not None else one(shuffle_key)

  def num_batches(x):
    return math.ceil(x.shape[0] / batch_size)

  if path == "scan":

    def one_run(state, x, y, indices, weights, dropout_key):
      return jax.lax.scan(lambda s, b: step(s, x, y, *b, dropout_key), state, (indices, weights))

    def chunk(state, x, y, shuffle_key, dropout_key, start, count):
      indices, weights = plan(shuffle_key, x.shape[0])
      indices, weights = (jax.lax.dynamic_slice_in_dim(a, start, count, axis=-2) for a in (indices, weights))
      if not seeds_axis:
        return one_run(state, x, y, indices, weights, dropout_key)
      plan_axis = None if shuffle_key is None else 0
      runs = jax.vmap(one_run, in_axes=(0, None, None, plan_axis, plan_axis, 0))
      return runs(state, x, y, indices, weights, dropout_key)

    compiled = jax.jit(chunk, static_argnames="count", donate_argnums=0, compiler_options=compiler_options)

    def scan_epoch(state, x, y, shuffle_key, dropout_key, start=0, count=None):
      count = num_batches(x) - start if count is None else count
      return compiled(state, x, y, shuffle_key, dropout_key, jnp.int32(start), count=count)

    return scan_epoch
  if path != "loop":
    raise ValueError(f"path must be 'auto', 'scan' or 'loop', got {path!r}.")
  jit_plan = jax.jit(plan, static_argnums=1)

  def batch_step(state, x, y, indices, weights, b, dropout_key):
    # Picks batch b inside the compiled step: one dispatch per step (slicing outside costs two more).
    pick = lambda a: jax.lax.dynamic_index_in_dim(a, b, axis=0, keepdims=False)
    return step(state, x, y, pick(indices), pick(weights), dropout_key)

  runs_step = jax.vmap(batch_step, in_axes=(0, None, None, 0, 0, None, 0)) if seeds_axis else batch_step
  jit_step = jax.jit(runs_step, donate_argnums=0, compiler_options=compiler_options)

  def loop_epoch(state, x, y, shuffle_key, dropout_key, start=0, count=None):
    count = num_batches(x) - start if count is None else count
    indices, weights = jit_plan(shuffle_key, x.shape[0])
    if seeds_axis and shuffle_key is None:  # one plan, shared by the runs
      num_runs = dropout_key.shape[0]
      indices, weights = (jnp.broadcast_to(a, (num_runs, *a.shape)) for a in (indices, weights))
    history = []
    for b in range(start, start + count):
      state, metrics = jit_step(state, x, y, indices, weights, np.int32(b), dropout_key)
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
    batch_invariant: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    compiler_options: dict[str, str] | str | None = "auto",
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
    batch_invariant: draw each example's dropout masks from its own key
      (:func:`example_keys`), independent of batch size, batch composition and
      device count.
    mesh: data-parallel training: each batch is split over the mesh's first
      axis, the parameters and the data set are replicated.
    checkpoints: save the run with these :class:`~jaxdrop.checkpoints.Checkpoints`
      every ``checkpoints.every_steps`` steps and at the end.
    resume: continue from the newest good checkpoint in ``checkpoints``.
    compiler_options: XLA options for the compiled steps; ``"auto"``:
      :func:`choose_compiler_options`; ``None``: XLA's defaults.

  Returns:
    A :class:`FitResult`; ``history`` has ``epoch``, ``train_loss``,
    ``test_loss`` (and ``train_acc``, ``test_acc`` for classification) for the
    evaluated epochs.

  Raises:
    TrainingDivergedError: if a training loss is NaN or infinite; nothing
      after the last finite step is saved.
  """
  options = dict(epochs=epochs, batch_size=batch_size, shuffle=shuffle, path=path, eval_every=eval_every,
                 eval_train=eval_train, quiet=quiet, description=description, batch_invariant=batch_invariant,
                 mesh=mesh, checkpoints=checkpoints, resume=resume, compiler_options=compiler_options)
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
    **options: the other keyword arguments of :func:`fit` (but ``mesh``).

  Returns:
    One :class:`FitResult` per seed, in order.
  """
  if options.get("mesh") is not None:
    raise ValueError("fit_seeds trains the seeds on one device; pass mesh=None (or train the seeds one by one).")
  params = jax.jit(jax.vmap(lambda s: init(run_keys(s)["init"])))(jnp.asarray(seeds))
  return _fit(task, params, tx, data, list(seeds), batched=True, epochs=epochs, batch_size=batch_size, **options)


def _fit(task, params, tx, data, seeds, *, batched, epochs, batch_size, shuffle=True, path="auto",
         eval_every=1, eval_train=False, quiet=False, description="", batch_invariant=False, mesh=None,
         checkpoints=None, resume=False, compiler_options="auto"):
  """:func:`fit` for one run (``batched=False``) or :func:`fit_seeds` (a leading runs axis)."""
  # Batched keys come from vmap: jnp.stack of typed keys trips jax's key-reuse checker.
  keys = jax.vmap(run_keys)(jnp.asarray(seeds)) if batched else run_keys(seeds[0])
  shuffle_keys, dropout_keys = keys["shuffle"], keys["dropout"]
  fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if batched else jax.random.fold_in
  x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
  reason = f"requested path={path!r}"
  one_params = jax.tree.map(lambda a: a[0], params) if batched else params
  if "auto" in (path, compiler_options):  # one trace of the model decides both
    convolves_on_cpu = _convolves_on_cpu(task, one_params, x_train)
    if path == "auto":
      path, reason = _auto_path(convolves_on_cpu)
    if compiler_options == "auto":
      compiler_options = _auto_compiler_options(convolves_on_cpu)
  batch_sharding = None
  if mesh is not None:
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    x_train, y_train, x_test, y_test, params = jax.device_put((x_train, y_train, x_test, y_test, params), replicated)
  run_epoch = make_train_epoch(task, batch_size, path, seeds_axis=batched, batch_invariant=batch_invariant,
                               batch_sharding=batch_sharding, compiler_options=compiler_options or None)
  create = lambda p: TrainState.create(apply_fn=task.apply, params=p, tx=tx)
  # Epochs donate the state's buffers: copy, so that the caller's params stay valid.
  params = jax.tree.map(jnp.copy, params)
  state = jax.jit(jax.vmap(create))(params) if batched else jax.jit(create)(params)
  sums_fn = jax.vmap(_evaluate_sums, in_axes=(None, 0, None, None, None)) if batched else _evaluate_sums
  evaluate_sums = jax.jit(sums_fn, static_argnums=(0, 4)) if batched else _evaluate_sums
  progress = {"epoch": 1, "epoch_step": 0, "histories": [_empty_history(task) for _ in seeds],
              "step_losses": [[] for _ in seeds], "pending": {}}
  resumed_from = None
  if resume and checkpoints is not None:
    restored = checkpoints.restore_latest(state)
    if restored is not None:
      state, progress = restored
      order = _empty_history(task)  # JSON may have sorted the keys
      progress["histories"] = [{k: h[k] for k in order} for h in progress["histories"]]
      resumed_from = int(np.max(state.step))
      if progress["epoch"] - 1 > epochs:
        raise CheckpointMismatchError(
            f"the checkpoint at step {resumed_from} in {checkpoints.directory} has trained"
            f" {progress['epoch'] - 1} epochs, more than epochs={epochs}: resume with --epochs"
            f" {progress['epoch'] - 1} or more (a run does not shrink)."
        )
      if mesh is not None:
        state = jax.device_put(state, replicated)
  histories = progress["histories"]
  steps_per_epoch = math.ceil(x_train.shape[0] / batch_size)
  from tqdm.auto import tqdm  # the progress bar: an optional dependency, needed only here

  bar = tqdm(total=epochs, initial=progress["epoch"] - 1, desc=description,
             disable=quiet or not sys.stderr.isatty(), leave=False)
  while progress["epoch"] <= epochs:
    epoch = progress["epoch"]
    shuffle_key = fold(shuffle_keys, epoch) if shuffle else None
    while progress["epoch_step"] < steps_per_epoch:
      first_step = int(np.max(state.step))
      count = steps_per_epoch - progress["epoch_step"]
      if checkpoints is not None and checkpoints.every_steps:
        count = min(count, checkpoints.every_steps - first_step % checkpoints.every_steps)
      # Every piece of an epoch redraws the epoch's shuffle from the same key (clone: on purpose).
      piece_key = None if shuffle_key is None else jax.random.clone(shuffle_key)
      state, metrics = run_epoch(state, x_train, y_train, piece_key, dropout_keys, progress["epoch_step"], count)
      metrics = {k: np.asarray(v).reshape(len(seeds), -1) for k, v in metrics.items()}
      for run_losses in metrics["loss"]:
        if not np.all(np.isfinite(run_losses)):
          bad = int(np.argmin(np.isfinite(run_losses)))
          raise TrainingDivergedError(first_step + bad + 1, float(run_losses[bad]))
      pending = progress["pending"]
      for k, v in metrics.items():
        pending[k] = np.concatenate([np.asarray(pending.get(k, np.zeros((len(seeds), 0), v.dtype)), v.dtype), v], 1)
      progress["epoch_step"] += count
      if progress["epoch_step"] < steps_per_epoch and checkpoints is not None and checkpoints.due(first_step + count):
        checkpoints.save(state, progress)
    losses = np.asarray(progress["pending"]["loss"], np.float32)
    for run in range(len(seeds)):
      progress["step_losses"][run].append(losses[run])
    if epoch % eval_every == 0 or epoch == epochs:
      _record_epoch(task, histories, epoch, batched, state, progress["pending"], eval_train, evaluate_sums,
                    (x_train, y_train), (x_test, y_test))
    bar.update(1)
    if histories[0]["epoch"]:
      bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in histories[0].items() if k != "epoch"})
    progress.update(epoch=epoch + 1, epoch_step=0, pending={})
    if checkpoints is not None and (checkpoints.due(int(np.max(state.step))) or epoch == epochs):
      checkpoints.save(state, progress)
  bar.close()
  execution = {"path": path, "reason": reason, "runs_vmapped": len(seeds) if batched else 1,
               "batch_invariant_masks": batch_invariant, "devices": 1 if mesh is None else mesh.size,
               "compiler_options": compiler_options or {},
               "resumed_from_step": resumed_from}
  states = [jax.tree.map(lambda a: a[i], state) for i in range(len(seeds))] if batched else [state]
  step_losses = [[np.asarray(l, np.float32) for l in run] for run in progress["step_losses"]]
  return [FitResult(st, h, sl, execution) for st, h, sl in zip(states, histories, step_losses, strict=True)]


def _record_epoch(task, histories, epoch, batched, state, pending, eval_train, evaluate_sums, train, test):
  """Appends epoch ``epoch``'s train and (deterministic) test metrics to each run's history."""
  x_test, y_test = test
  test_m = _summarize(task, evaluate_sums(task, state.params, x_test, y_test, min(1024, x_test.shape[0])))
  if eval_train:
    x_train, y_train = train
    train_m = _summarize(task, evaluate_sums(task, state.params, x_train, y_train, min(1024, x_train.shape[0])))
  else:  # the running average over this epoch's training steps
    sums = {k: np.sum(np.asarray(v, np.float32), axis=-1) for k, v in pending.items() if k != "loss"}
    train_m = _summarize(task, sums if batched else {k: v[0] for k, v in sums.items()})
  for run, history in enumerate(histories):
    pick = (lambda v: v[run]) if batched else (lambda v: v)
    history["epoch"].append(epoch)
    history["train_loss"].append(pick(train_m["loss"]))
    history["test_loss"].append(pick(test_m["loss"]))
    if task.classification:
      history["train_acc"].append(pick(train_m["accuracy"]))
      history["test_acc"].append(pick(test_m["accuracy"]))


def _empty_history(task: Task) -> dict[str, list[float]]:
  history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": []}
  if task.classification:
    history.update(train_acc=[], test_acc=[])
  return history
