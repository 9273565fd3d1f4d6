"""``update_bn``: a linen model's BatchNorm statistics recomputed on (averaged) weights, as torch's."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import normalization as _normalization

__all__ = ["update_bn"]


def _batch_norm_statistics(model: nn.Module, variables, x, apply_kwargs: dict, unbiased: bool):
  """``{BatchNorm path: (batch mean, batch variance)}`` of one forward pass of ``model`` on ``x``."""
  found: dict[tuple[str, ...], tuple[jax.Array, jax.Array]] = {}

  def capture(next_fun, args, kwargs, context):
    module = context.module
    batch_norm = isinstance(module, nn.BatchNorm) and context.method_name == "__call__"
    if batch_norm and not module.is_initializing():
      y = args[0] if args else kwargs["x"]
      running = args[1] if len(args) > 1 else kwargs.get("use_running_average")
      if not nn.merge_param("use_running_average", module.use_running_average, running):
        # The statistics flax's BatchNorm computes for this batch (the same call as in its __call__).
        feature_axes = _normalization._canonicalize_axes(y.ndim, module.axis)
        axes = tuple(i for i in range(y.ndim) if i not in feature_axes)
        mask = kwargs.get("mask")
        mean, var = _normalization._compute_stats(
            y, axes, dtype=module.dtype, axis_name=module.axis_name,
            axis_index_groups=module.axis_index_groups, use_fast_variance=module.use_fast_variance,
            mask=mask, force_float32_reductions=module.force_float32_reductions)
        if unbiased:  # torch's running_var: n / (n - 1) times the biased batch variance
          n = math.prod(y.shape[a] for a in axes) if mask is None else jnp.sum(
              jnp.broadcast_to(mask, y.shape), axis=axes)
          n = jnp.asarray(n, var.dtype)
          var = var * n / jnp.maximum(n - 1, 1)
        if module.path in found:
          raise ValueError(f"update_bn: the BatchNorm at {'/'.join(module.path)} ran twice in one forward"
                           " pass; torch's update_bn has no meaning for a shared one: average its statistics"
                           " yourself.")
        found[module.path] = (mean, var)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    model.apply(variables, x, mutable=["batch_stats"], **apply_kwargs)
  return found


def update_bn(
    model: nn.Module,
    variables: Any,
    batches: Iterable[Any],
    *,
    unbiased: bool = False,
    **apply_kwargs: Any,
) -> Any:
  """Recomputes a linen model's BatchNorm statistics on averaged weights, as torch's ``swa_utils.update_bn``.

  Torch resets every BatchNorm's running statistics, sets its momentum to
  ``None`` (a cumulative, equal-weight average over batches) and runs the
  model in training mode over the loader. Here each batch runs once through
  ``model.apply(variables, x, mutable=["batch_stats"], **apply_kwargs)``
  (pass what turns training on, e.g. ``train=True``, and any ``rngs``); the
  statistics of each ``nn.BatchNorm`` that normalizes with batch statistics
  are those its own ``__call__`` computes (caught by ``nn.intercept_methods``),
  and the new ``mean`` and ``var`` are their means over the batches, each
  batch weighted equally (as torch's, whatever the batch size). Differences
  from torch: flax's batch variance is biased (divided by ``n``) where torch's
  ``running_var`` averages unbiased ones (``n - 1``); ``unbiased=True`` gives
  torch's. Each batch's statistics come from one jitted forward pass (one
  compile per batch shape).

  Args:
    model: the flax.linen module.
    variables: its variables (``{"params": averaged params, "batch_stats": ...}``);
      left untouched.
    batches: an iterable of inputs, or of tuples/lists whose first element is
      the input (torch's convention).
    unbiased: average unbiased batch variances (torch's ``running_var``).
    **apply_kwargs: more arguments of ``model.apply`` (e.g. ``train=True``, ``rngs=...``).

  Returns:
    ``variables`` with new ``batch_stats`` for every BatchNorm that ran in
    training mode (the others keep theirs).

  Raises:
    ValueError: if ``batches`` is empty, or no BatchNorm computed batch statistics.

  Example:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, jaxdrop
    >>> model = nn.BatchNorm(use_running_average=False)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 1)))
    >>> batches = [jnp.array([[0.0], [2.0]]), jnp.array([[4.0], [8.0]])]
    >>> stats = jaxdrop.update_bn(model, variables, batches)["batch_stats"]
    >>> stats["mean"].tolist(), stats["var"].tolist()  # means 1 and 6, variances 1 and 4
    ([3.5], [2.5])
  """
  totals: dict[tuple[str, ...], list] = {}
  count = 0
  statistics = jax.jit(lambda v, x: _batch_norm_statistics(model, v, x, apply_kwargs, unbiased))
  for batch in batches:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    stats = statistics(variables, x)
    if count and stats.keys() != totals.keys():
      raise ValueError(f"update_bn: batch {count} ran other BatchNorm layers than the first batch: give every"
                       " batch the same structure.")
    for path, (mean, var) in stats.items():
      sums = totals.setdefault(path, [jnp.zeros_like(mean), jnp.zeros_like(var)])
      sums[0], sums[1] = sums[0] + mean, sums[1] + var
    count += 1
  if count == 0:
    raise ValueError("update_bn: batches is empty: pass at least one batch of inputs.")
  if not totals:
    raise ValueError("update_bn: no BatchNorm computed batch statistics: pass the apply argument that turns"
                     " training on (e.g. train=True), or the model has no nn.BatchNorm.")
  out = dict(variables)  # a new top-level container; the other collections keep their leaves
  stats = _unfreeze(out.get("batch_stats", {}))
  for path, (mean_sum, var_sum) in totals.items():
    node = stats
    for name in path:
      node = node.setdefault(name, {})
    node["mean"] = (mean_sum / count).astype(node["mean"].dtype if "mean" in node else mean_sum.dtype)
    node["var"] = (var_sum / count).astype(node["var"].dtype if "var" in node else var_sum.dtype)
  out["batch_stats"] = stats
  return out


def _unfreeze(tree):
  """Nested dicts (new containers) of a dict or FrozenDict tree, the leaves shared."""
  if not hasattr(tree, "items"):
    return tree
  return {k: _unfreeze(v) for k, v in tree.items()}
