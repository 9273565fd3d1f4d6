"""Deterministic evaluation over a whole data set, in batches."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop.training._task import Task, batch_plan, batch_sums

__all__ = ["evaluate", "evaluate_sums", "summarize"]


def evaluate(task: Task, params: Any, x, y, batch_size: int = 1024) -> dict[str, float]:
  """Deterministic loss (and accuracy) over a whole data set, in batches.

  Args:
    task: the model and loss.
    params: the parameters.
    x: inputs.
    y: targets.
    batch_size: examples per compiled batch.

  Returns:
    ``{"loss": mean loss, "accuracy": fraction correct}`` (no accuracy for
    regression tasks).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  return summarize(task, evaluate_sums(task, params, x, y, min(batch_size, x.shape[0])))


@jax.jit(static_argnums=(0, 4))
def evaluate_sums(task: Task, params, x, y, batch_size: int):
  """Summed loss, count (and correct predictions) over ``x, y`` in one compiled scan of batches."""
  indices, weights = batch_plan(None, x.shape[0], batch_size)

  def body(totals, batch):
    idx, w = batch
    outputs = task.apply(params, jnp.take(x, idx, axis=0), False, None)
    sums = batch_sums(task, outputs, jnp.take(y, idx, axis=0), w)
    return jax.tree.map(jnp.add, totals, sums), None

  zeros = {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "count", "correct")}
  if not task.classification:
    del zeros["correct"]
  return jax.lax.scan(body, zeros, (indices, weights))[0]


def summarize(task: Task, sums) -> dict[str, Any]:
  """Mean loss and accuracy from summed metrics (Python floats, or lists with a runs axis)."""
  out = {"loss": sums["loss_sum"] / sums["count"]}
  if task.classification:
    out["accuracy"] = sums["correct"] / sums["count"]
  return jax.tree.map(lambda v: np.asarray(v).tolist(), out)
