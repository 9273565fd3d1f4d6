"""What is trained (:class:`Task`), its losses, and the run's random streams and batches."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["Task", "apply_per_example", "batch_plan", "batch_sums", "cross_entropy", "example_keys",
           "half_squared_error", "run_keys", "squared_error"]

Params = Any


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

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdrop.training import Task, half_squared_error
    >>> task = Task(lambda p, x, train, key: x @ p, half_squared_error, classification=False)
    >>> task.apply(jnp.ones((2, 1)), jnp.ones((3, 2)), False, None).shape
    (3, 1)
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
    padding rows point at row 0 with weight 0 (a short last batch's loss is
    the mean over its real examples, as PyTorch's ``drop_last=False``).
  """
  order = jnp.arange(n, dtype=jnp.int32) if key is None else jax.random.permutation(key, n).astype(jnp.int32)
  num_batches = math.ceil(n / batch_size)
  pad = num_batches * batch_size - n
  order = jnp.concatenate([order, jnp.zeros(pad, jnp.int32)])
  weights = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
  return order.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def batch_sums(task: Task, outputs, targets, weights) -> dict[str, jax.Array]:
  """Weighted sums of a batch's loss (and correct predictions) and its weight count."""
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
