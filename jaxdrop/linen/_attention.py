"""Flax linen attention layers whose attention dropout stores no mask."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jaxdrop.attention import dot_product_attention

__all__ = ["MultiHeadDotProductAttention", "SelfAttention"]


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
  """``flax.linen.MultiHeadDotProductAttention`` with :func:`jaxdrop.attention.dot_product_attention`.

  Same attributes, parameters and call signature as Flax's layer (a checkpoint
  of one loads into the other); only the default ``attention_fn`` differs, so
  that the attention dropout (``dropout_rate``, from the ``"dropout"`` rng
  stream) keeps no mask for the backward pass.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1)
    >>> x = jnp.ones((1, 5, 8))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 5, 8)
  """

  attention_fn: Callable[..., jax.Array] = dot_product_attention


class SelfAttention(nn.SelfAttention):
  """``flax.linen.SelfAttention`` with :func:`jaxdrop.attention.dot_product_attention` (see
  :class:`MultiHeadDotProductAttention`)."""

  attention_fn: Callable[..., jax.Array] = dot_product_attention
