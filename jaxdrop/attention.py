"""Attention dropout that stores no mask: a drop-in ``attention_fn`` for Flax's attention layers.

In a transformer the largest dropout masks are on the attention weights
(``batch x heads x L x L``). ``flax.linen.dot_product_attention`` keeps a
float multiplier of that size for the backward pass, and the dropped weights
besides. Here the dropout is :func:`jaxdrop.dropout` (whose backward pass
regenerates the mask from an 8-byte seed) and the weighted sum over the values
is rematerialized, so a training step keeps only what the same step without
dropout keeps: the softmax output and the values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.nnx.nn.attention import dot_product_attention_weights as nnx_attention_weights

from jaxdrop import _bits, _checks
from jaxdrop._masked import seeded_dropout

__all__ = ["dot_product_attention"]

_WEIGHTED_SUM = "...hqk,...khd->...qhd"


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float | jax.Array = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    module=None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
    attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
    is_causal: bool = False,
    *,
    mask_bits: int = 16,
) -> jax.Array:
  """``flax.linen.dot_product_attention`` with key-only attention dropout.

  Same signature, same weights and same result at evaluation (the weights are
  Flax's own :func:`flax.linen.dot_product_attention_weights`); pass it as
  ``attention_fn`` to ``flax.linen.MultiHeadDotProductAttention`` or
  ``flax.nnx.MultiHeadAttention`` (or use :class:`jaxdrop.linen.MultiHeadDotProductAttention`
  and :class:`jaxdrop.nnx.MultiHeadAttention`, which do). While training, the
  attention weights go through inverted dropout (unbiased: ``E[output]`` is the
  output without dropout); its mask is drawn from ``dropout_rng`` and never
  stored: the backward pass regenerates it, and recomputes the dropped weights
  from the softmax output it keeps anyway.

  Args:
    query: ``[batch..., q_length, num_heads, depth]``.
    key: ``[batch..., kv_length, num_heads, depth]``.
    value: ``[batch..., kv_length, num_heads, v_depth]``.
    bias: added to the logits; broadcastable to ``[batch..., num_heads, q_length, kv_length]``.
    mask: ``False`` where attention is not allowed; broadcastable like ``bias``.
    broadcast_dropout: share one mask across the batch and head axes (Flax's
      default), or draw one mask per example and head (``False``).
    dropout_rng: the PRNG key of the mask, needed when dropout is active.
    dropout_rate: drop probability of each attention weight (not the keep
      probability); a Python float or a traced scalar (a schedule).
    deterministic: no dropout (evaluation).
    dtype: the computation dtype (default: from the inputs).
    precision: precision of the two einsums.
    module: a Flax module to sow the (pre-dropout) weights into, as Flax does.
    force_fp32_for_softmax: compute the softmax in float32.
    einsum_dot_general: the ``dot_general`` of both einsums.
    qk_attn_weights_einsum: the einsum of the logits (with the next, e.g. AQT's).
    attn_weights_value_einsum: the einsum of the weighted sum over the values.
    is_causal: add a causal mask (``flax.nnx``'s argument).
    mask_bits: precision of the dropout mask, as in :func:`jaxdrop.dropout`.

  Returns:
    ``[batch..., q_length, num_heads, v_depth]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import jaxdrop
    >>> layer = nn.MultiHeadDotProductAttention(
    ...     num_heads=2, dropout_rate=0.1, attention_fn=jaxdrop.attention.dot_product_attention)
    >>> x = jnp.ones((1, 5, 8))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> y = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    >>> y.shape
    (1, 5, 8)
  """
  dropout_rate = _checks.check_rate(dropout_rate, name="dropout_rate")
  if is_causal:
    causal = jnp.tril(jnp.ones((query.shape[-3], key.shape[-3]), jnp.bool_))
    mask = causal if mask is None else jnp.logical_and(mask.astype(jnp.bool_), causal)
  if (precision or einsum_dot_general) and attn_weights_value_einsum:
    raise ValueError(
        "precision/einsum_dot_general and qk_attn_weights_einsum/attn_weights_value_einsum are"
        " mutually exclusive; pass only one of them."
    )
  if bool(qk_attn_weights_einsum) != bool(attn_weights_value_einsum):
    raise ValueError("qk_attn_weights_einsum and attn_weights_value_einsum must be given together.")
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  if isinstance(module, nn.Module) or force_fp32_for_softmax or einsum_dot_general or qk_attn_weights_einsum:
    weights = nn.dot_product_attention_weights(
        query, key, bias, mask, broadcast_dropout, None, 0.0, True, query.dtype, precision, module,
        force_fp32_for_softmax=force_fp32_for_softmax, einsum_dot_general=einsum_dot_general,
        einsum=qk_attn_weights_einsum)
  else:  # flax.nnx's, which also groups query heads over fewer key heads (GQA)
    weights = nnx_attention_weights(query, key, bias, mask, broadcast_dropout, None, 0.0, True, query.dtype,
                                    precision, module)
  einsum = attn_weights_value_einsum or functools.partial(
      jnp.einsum, precision=precision, _dot_general=einsum_dot_general or jax.lax.dot_general
  )
  active = not deterministic and not (isinstance(dropout_rate, float) and dropout_rate == 0.0)
  if not active:
    return _weighted_sum(einsum, weights, value)
  _checks.check_mask_bits(mask_bits)
  seed = _bits.derive_seed(_checks.check_key(dropout_rng, fn="jaxdrop.attention.dot_product_attention",
                                             argument="dropout_rng",
                                             evaluation="For evaluation, pass deterministic=True."))
  mask_shape = (*(1,) * (weights.ndim - 2), *weights.shape[-2:]) if broadcast_dropout else weights.shape

  # Rematerialized: the backward pass recomputes the dropped weights from ``weights`` (kept for the
  # softmax's own gradient) instead of storing them; dropout's own gradient regenerates its mask. The key
  # is consumed outside, once: the recomputation replays the mask from its seed.
  @jax.checkpoint
  def weighted_sum(weights, value, seed):
    dropped = seeded_dropout(seed, weights, dropout_rate, mask_shape, "inverted", mask_bits)
    return _weighted_sum(einsum, dropped, value)

  return weighted_sum(weights, value, seed)


def _weighted_sum(einsum, weights: jax.Array, value: jax.Array) -> jax.Array:
  """``sum_k weights[..., h, q, k] * value[..., k, h, d]``, with grouped value heads (GQA) as ``flax.nnx``."""
  q_heads, v_heads = weights.shape[-3], value.shape[-2]
  if q_heads == v_heads:
    return einsum(_WEIGHTED_SUM, weights, value)
  if q_heads % v_heads:
    raise ValueError(f"the query heads ({q_heads}) must be a multiple of the value heads ({v_heads}).")
  grouped = weights.reshape(*weights.shape[:-3], v_heads, q_heads // v_heads, *weights.shape[-2:])
  out = einsum("...hgqk,...khd->...qhgd", grouped, value)
  return out.reshape(*out.shape[:-3], q_heads, out.shape[-1])
