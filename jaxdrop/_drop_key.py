"""DropKey (Li et al., CVPR 2023): attention's keys dropped before the softmax, and its per-layer rates.

A dropped logit is excluded from the softmax, so each row's kept weights sum
to 1 (attention dropout drops weights after it and rescales). The mask is
drawn by the one mask kernel (:mod:`jaxdrop._bits`) over the logits' shape:
the reference path adds it as a bias (:func:`drop_key_bias`), the blockwise
path (:mod:`jaxdrop._flash`) regenerates it tile by tile from the same
:class:`jaxdrop._flash.DropKey` terms (:func:`drop_key_terms`).
:func:`jaxdrop.attention.dot_product_attention` takes ``drop_key_rate``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdrop import _bits, _checks, _flash
from jaxdrop._masked import keep_for

__all__ = ["drop_key_bias", "drop_key_rates", "drop_key_terms"]


def drop_key_rates(max_rate: float, depth: int, *, end: float = 0.0) -> tuple[float, ...]:
  """Per-layer DropKey rates falling linearly from ``max_rate`` to ``end``: the paper's decreasing schedule.

  DropKey (Li et al., CVPR 2023) drops more keys in the shallow self-attention
  layers than in the deep ones, against over-fitting to low-level patterns
  while keeping the high-level semantics. As we read the paper's decreasing
  schedule, the rate falls linearly with depth: layer ``i`` of ``depth`` gets
  ``max_rate + (end - max_rate) * i / (depth - 1)``, from ``max_rate`` at the
  first layer to ``end`` (0 by default) at the last. It is
  :func:`jaxdrop.drop_path_rates` (which rises) reversed.

  Args:
    max_rate: the DropKey rate of the first layer (a drop probability).
    depth: the number of attention layers.
    end: the rate of the last layer.

  Returns:
    ``depth`` Python floats, one ``drop_key_rate`` per layer (pass ``jnp.asarray(...)`` to an ``nn.scan``
    stack as a scanned input, and each layer's ``drop_key_rate=`` at call time).

  Raises:
    ValueError: if a rate is outside ``[0, 1]`` or ``depth`` is not a positive integer.

  Example:
    >>> from jaxdrop.attention import drop_key_rates
    >>> [round(r, 6) for r in drop_key_rates(0.1, 5)]
    [0.1, 0.075, 0.05, 0.025, 0.0]
  """
  max_rate = _checks.check_rate(max_rate, name="max_rate")
  end = _checks.check_rate(end, name="end")
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ValueError(f"depth must be a positive integer (the number of attention layers), got"
                     f" depth={depth!r}.")
  if depth == 1:
    return (max_rate,)
  return tuple(max_rate + (end - max_rate) * i / (depth - 1) for i in range(depth))


def drop_key_terms(seed: jax.Array, rate, mask_bits: int) -> tuple[_flash.DropKey, jax.Array | None]:
  """DropKey's seed and lane threshold (a kept logit's lane is below it), and, for a traced rate, the offset
  of the output (0, NaN for a rate outside ``[0, 1]``)."""
  rate = _checks.check_rate(rate, name="drop_key_rate")
  keep = keep_for(rate, mask_bits)
  nan = None if isinstance(keep.valid, bool) else jnp.where(keep.valid, 0.0, jnp.nan).astype(jnp.float32)
  return _flash.DropKey(seed, jnp.asarray(keep.threshold, jnp.uint32)), nan


def drop_key_bias(query, key, bias, drop_key: _flash.DropKey, broadcast_dropout: bool, mask_bits: int):
  """The reference path's DropKey: the bias plus ``min / 2`` on the dropped logits, and the keep mask.

  The bias is finite, so that no row is all ``-inf``, and a constant added to the logits, so that the backward
  pass keeps nothing of it; the keep mask only decides which rows have a kept key (the others are zeros, of
  shape ``[..., q_length, 1]``). Each dropped weight is ``exp(min / 2 - max) = 0`` exactly: the softmax over
  the kept logits.
  """
  batch, heads = query.shape[:-3], query.shape[-2]
  lq, lk = query.shape[-3], key.shape[-3]
  shape = ((1,) * (len(batch) + 1) + (lq, lk)) if broadcast_dropout else (*batch, heads, lq, lk)
  keep = _bits.bernoulli_lanes(drop_key.seed, shape, drop_key.threshold, mask_bits)
  dtype = query.dtype if bias is None else jnp.asarray(bias).dtype
  dropped = jnp.where(keep, jnp.zeros((), dtype), jnp.asarray(jnp.finfo(dtype).min / 2, dtype))
  bias = dropped if bias is None else jnp.asarray(bias) + dropped
  return bias, keep
