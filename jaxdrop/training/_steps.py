"""The jit-compiled train step and epoch.

The dropout key of a step is ``fold_in(dropout_key, state.step)`` (so a
resumed run draws the same masks), or one key per example
(:func:`~jaxdrop.training.example_keys`); the shuffle of an epoch is drawn on
the device. An epoch runs either as one ``lax.scan`` over the batches
(``path="scan"``, the state buffers donated) or as a Python loop over the same
jitted step (``path="loop"``); both see the same batches, masks and updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from jaxdrop.training._task import (
    Task,
    apply_per_example,
    batch_plan,
    batch_sums,
    example_keys,
    r_drop_batch_sums,
    r_drop_on,
)

__all__ = ["make_train_epoch", "make_train_step"]


def make_train_step(task: Task, *, batch_invariant: bool = False, batch_sharding=None) -> Callable:
  """``(state, x, y, indices, weights, dropout_key) -> (state, metrics)`` for one batch (not jitted).

  The batch is gathered from the full arrays ``x`` and ``y`` by ``indices``.
  The step's dropout key is ``fold_in(dropout_key, state.step)``; with
  ``batch_invariant`` each example gets its own key instead
  (:func:`example_keys`, from the epoch and its data-set index).
  With R-Drop (``task.r_drop_alpha``) the model runs once on the batch
  concatenated with itself and the step minimizes :func:`jaxdrop.r_drop_loss`;
  the metrics stay those of the task (over both copies).
  ``batch_sharding`` (a ``NamedSharding``) splits the batch over devices.
  """

  def step(state: TrainState, x, y, indices, weights, dropout_key):
    if batch_sharding is not None:
      indices, weights = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (indices, weights))
    xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)
    if batch_sharding is not None:
      xb, yb = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (xb, yb))
    r_drop = r_drop_on(task)
    # R-Drop: one pass over the batch concatenated with itself, so each example's two copies draw different
    # masks (the reference code's concatenation); with per-example keys, copy 2 of example i takes the key of
    # the data-set index n + i, so copy 1 keeps the masks the run has without R-Drop.
    inputs = jnp.concatenate([xb, xb]) if r_drop else xb
    if batch_invariant:
      steps_per_epoch = math.ceil(x.shape[0] / indices.shape[0])
      epoch = state.step // steps_per_epoch
      keys = example_keys(dropout_key, epoch, indices)
      if r_drop:
        keys = jnp.concatenate([keys, example_keys(dropout_key, epoch, indices + x.shape[0])])
      forward = lambda params: apply_per_example(task, params, inputs, keys)
    else:
      key = jax.random.fold_in(dropout_key, state.step)
      forward = lambda params: task.apply(params, inputs, True, key)

    def objective(params):
      outputs = forward(params)
      if r_drop:
        objective_sum, sums = r_drop_batch_sums(task, outputs, yb, weights)
        loss, fitted = sums["loss_sum"] / sums["count"], objective_sum / sums["count"]
      else:
        sums = batch_sums(task, outputs, yb, weights)
        loss = fitted = sums["loss_sum"] / sums["count"]
      total = fitted + task.penalty(params) if task.penalty is not None else fitted
      return total, (loss, sums)

    grads, (loss, sums) = jax.grad(objective, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, **sums}

  return step


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
      (e.g. :data:`~jaxdrop.training.xla_cpu.CPU_CONV_COMPILER_OPTIONS`).
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
