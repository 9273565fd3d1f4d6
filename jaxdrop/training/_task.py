"""What is trained (:class:`Task`), its losses, and the run's random streams and batches."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdrop import _bits
from jaxdrop._checks import check_scalar, is_concrete
from jaxdrop._r_drop import r_drop_loss
from jaxdrop.training._options import MaskGenerator

__all__ = ["Task", "apply_per_example", "batch_plan", "batch_sums", "cross_entropy", "example_keys",
           "half_squared_error", "r_drop_batch_sums", "r_drop_on", "run_keys", "squared_error",
           "without_r_drop"]

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
    r_drop_alpha: R-Drop (Liang et al., 2021; :func:`jaxdrop.r_drop_loss`): when not ``0``, each train step
      runs ``apply`` once on the batch concatenated with itself under one dropout key (so each example's
      two copies draw different masks, as the reference code does) and minimizes the task loss averaged
      over both copies plus ``r_drop_alpha / 2`` times the symmetric KL divergence of the copies' outputs,
      which must be logits over their last axis. The reported training loss and accuracy are those of the
      task over both copies (without the divergence, as without the penalty). ``0`` (the default) trains
      exactly as without the field; a traced value (a :func:`~jaxdrop.training.fit_sweep` point) always
      takes the two passes.

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
  r_drop_alpha: float = 0.0

  def __post_init__(self):
    value = check_scalar(self.r_drop_alpha, name="Task.r_drop_alpha",
                         meaning="the weight of R-Drop's symmetric KL divergence; 0 turns it off")
    if value is not None:
      if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"Task.r_drop_alpha must be a finite number >= 0 (the weight of R-Drop's symmetric"
                         f" KL; 0 turns it off), got {self.r_drop_alpha!r}.")
      object.__setattr__(self, "r_drop_alpha", value)  # a Python float: the task stays hashable


def r_drop_on(task: Task) -> bool:
  """Whether ``task``'s train steps take R-Drop's two passes (decided while tracing: a traced alpha is on)."""
  return not (is_concrete(task.r_drop_alpha) and task.r_drop_alpha == 0)


def without_r_drop(task: Task) -> Task:
  """``task`` with R-Drop off: what evaluation runs (one deterministic pass), hashable also when the alpha
  of ``task`` is traced."""
  return dataclasses.replace(task, r_drop_alpha=0.0) if r_drop_on(task) else task


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels (``nn.CrossEntropyLoss``)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def half_squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example ``sum (pred - target)**2 / 2`` (d2l's ``squared_loss``)."""
  return jnp.sum(jnp.square(pred - target), axis=-1) / 2


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example ``mean (pred - target)**2`` (``nn.MSELoss(reduction="none")``)."""
  return jnp.mean(jnp.square(pred - target), axis=-1)


def run_keys(seed: int | jax.Array, mask_generator: MaskGenerator = "philox4x32-10") -> dict[str, jax.Array]:
  """The run's independent streams, all derived from ``seed``: init, dropout, shuffle, data.

  ``seed`` may be traced (``jax.vmap(run_keys)(seeds)`` gives the streams of many runs). With
  ``mask_generator="philox4x32-7"`` (:attr:`FitOptions.mask_generator`) the dropout key is the same words
  as a key of :data:`jaxdrop.PHILOX7`, whose masks come from 7-round Philox.
  """
  root = jax.random.key(seed)
  keys = {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "dropout", "shuffle", "data"))}
  if mask_generator not in typing.get_args(MaskGenerator):
    raise ValueError(f"run_keys: mask_generator must be 'philox4x32-10' or 'philox4x32-7', got"
                     f" {mask_generator!r}.")
  if mask_generator == "philox4x32-7":
    keys["dropout"] = jax.random.wrap_key_data(jax.random.key_data(keys["dropout"]), impl=_bits.PHILOX7)
  return keys


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


def r_drop_batch_sums(task: Task, outputs, targets, weights) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted sum of an R-Drop step's objective (:func:`jaxdrop.r_drop_loss`), and :func:`batch_sums` of
  its batch.

  Args:
    task: what is trained (its ``loss`` and ``r_drop_alpha``).
    outputs: ``(2 n, ...)``: the outputs of one training pass over the batch concatenated with itself.
    targets: ``(n, ...)``: the batch's targets.
    weights: ``(n,)``: the batch's example weights.

  Returns:
    ``(objective_sum, sums)``: ``sums`` as :func:`batch_sums`' with ``loss_sum`` (and ``correct``) the
    means over each example's two copies.
  """
  n = weights.shape[0]
  per_row = task.loss(outputs, jnp.concatenate([targets, targets]))
  per_example = r_drop_loss(outputs, per_row, alpha=task.r_drop_alpha)
  sums = {"loss_sum": jnp.sum((per_row[:n] + per_row[n:]) / 2 * weights), "count": jnp.sum(weights)}
  if task.classification:
    correct = (jnp.argmax(outputs, axis=-1) == jnp.concatenate([targets, targets])).astype(jnp.float32)
    sums["correct"] = jnp.sum((correct[:n] + correct[n:]) / 2 * weights)
  return jnp.sum(per_example * weights), sums


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
