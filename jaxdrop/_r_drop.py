"""R-Drop (Liang et al., 2021): the loss of two dropout passes of each example, pulled together by their
symmetric KL divergence.

The reference code (github.com/dropreg/R-Drop, ``fairseq_src/examples/translation_rdrop``,
``RegLabelSmoothedCrossEntropyCriterion.forward_reg``) runs the model once on the batch concatenated with
itself, so that the two copies of each example draw different dropout masks, and minimizes, summed over the
examples and divided by their number, the paper's eq. (3)::

  L_i = task(pass 1) + task(pass 2) + alpha * (KL(P1 || P2) + KL(P2 || P1)) / 2.

:func:`r_drop_loss` returns ``L_i / 2`` per example: the task loss averaged over the two copies (so that, at
``alpha = 0``, it is an ordinary dropout loss, at the learning rate of one), plus ``alpha / 2`` times
:func:`symmetric_kl`. ``alpha`` is the paper's.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop._checks import check_scalar

__all__ = ["r_drop_loss", "symmetric_kl"]


def symmetric_kl(p_logits: jax.Array, q_logits: jax.Array, *, axis: int = -1) -> jax.Array:
  """``(KL(p || q) + KL(q || p)) / 2`` of ``p = softmax(p_logits)`` and ``q = softmax(q_logits)``.

  The two divergences are summed in one pass as ``sum (p - q) * (log p - log q) / 2``, whose every term is
  non-negative, so the result is ``>= 0`` and exactly ``0`` when the logits are equal.

  Args:
    p_logits: logits of the first distribution.
    q_logits: logits of the second, of the same shape.
    axis: the class axis, reduced by the sum.

  Returns:
    The symmetric divergence, of ``p_logits``'s shape without ``axis``, in the logits' dtype.

  Raises:
    ValueError: if the shapes differ.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdrop import symmetric_kl
    >>> p, q = jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.9, 0.1]))
    >>> round(float(symmetric_kl(p, q)), 4)  # (KL(p || q) + KL(q || p)) / 2 = (0.5108 + 0.3681) / 2
    0.4394
  """
  if jnp.shape(p_logits) != jnp.shape(q_logits):
    raise ValueError(f"symmetric_kl: p_logits and q_logits must have the same shape, got"
                     f" {jnp.shape(p_logits)} and {jnp.shape(q_logits)}.")
  log_p = jax.nn.log_softmax(p_logits, axis=axis)
  log_q = jax.nn.log_softmax(q_logits, axis=axis)
  return jnp.sum((jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q), axis=axis) / 2


def r_drop_loss(logits: jax.Array, task_loss: jax.Array, *, alpha: Any) -> jax.Array:
  """The R-Drop loss of each example from one training pass over its batch concatenated with itself.

  ``logits`` are the outputs of ``model(concatenate([x, x]))`` with dropout on: rows ``i`` and ``n + i``
  are two passes of example ``i`` under different masks. Per example::

    (task_loss[i] + task_loss[n + i]) / 2 + alpha / 2 * symmetric_kl(logits[i], logits[n + i])

  which is the paper's eq. (3), ``NLL_1 + NLL_2 + alpha * (KL(P1||P2) + KL(P2||P1)) / 2``, halved: its mean
  over the batch is the reference's objective (``forward_reg``, divided by the examples' number) over two.

  Args:
    logits: ``(2 n, ..., classes)``: the logits of both copies, the first ``n`` rows one pass.
    task_loss: the task's loss of each row, of shape ``(2 n, ...)`` with ``...`` a prefix of the logits'
      middle axes; the divergence is averaged over the middle axes it lacks (for a sequence model whose
      per-example loss is the mean over positions, give ``(2 n,)``).
    alpha: the divergence's weight (``>= 0``; a Python or traced scalar).

  Returns:
    ``(n, ...)``: each example's R-Drop loss in ``task_loss``'s dtype (average it over the batch's real
    examples).

  Raises:
    ValueError: if the batch is odd, the shapes do not match, or a concrete ``alpha`` is negative or not
      finite.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdrop import r_drop_loss
    >>> logits = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))  # one example, two passes
    >>> task_loss = jnp.array([0.7, 0.1])
    >>> round(float(r_drop_loss(logits, task_loss, alpha=1.0)[0]), 4)  # (0.7 + 0.1) / 2 + 0.4394 / 2
    0.6197
  """
  shape, loss_shape = jnp.shape(logits), jnp.shape(task_loss)
  if len(shape) < 2 or shape[0] % 2:
    raise ValueError(f"r_drop_loss: logits must be (2 n, ..., classes), the batch concatenated with itself;"
                     f" got shape {shape}.")
  if not (1 <= len(loss_shape) <= len(shape) - 1 and loss_shape == shape[:len(loss_shape)]):
    raise ValueError(f"r_drop_loss: task_loss must be the loss of each row, of shape (2 n, ...) a prefix of"
                     f" the logits' {shape[:-1]}; got {loss_shape}.")
  _check_alpha(alpha)
  n = shape[0] // 2
  kl = symmetric_kl(logits[:n], logits[n:])
  if kl.ndim > len(loss_shape):
    kl = jnp.mean(kl, axis=tuple(range(len(loss_shape), kl.ndim)))
  task = (task_loss[:n] + task_loss[n:]) / 2
  return task + jnp.asarray(alpha, task.dtype) / 2 * kl.astype(task.dtype)


def _check_alpha(alpha: Any, name: str = "alpha") -> None:
  """Refuses a concrete ``alpha`` that is not a finite number ``>= 0`` (a traced one passes unchecked)."""
  value = check_scalar(alpha, name=name, meaning="the weight of R-Drop's symmetric KL divergence")
  if value is not None and not (math.isfinite(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0 (the weight of R-Drop's symmetric KL; 0 turns it"
                     f" off), got {alpha!r}.")
