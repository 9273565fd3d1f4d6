"""Flax NNX attention whose attention dropout stores no mask."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from jaxdrop.attention import dot_product_attention

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nnx.MultiHeadAttention):
  """``flax.nnx.MultiHeadAttention`` with :func:`jaxdrop.attention.dot_product_attention`.

  Same arguments, parameters and call as Flax's layer; only the default
  ``attention_fn`` differs, so that the attention dropout (``dropout_rate``)
  keeps no mask for the backward pass. ``model.train()`` / ``model.eval()``
  switch it as usual.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.1,
    ...                                decode=False, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 5, 8)), deterministic=False).shape
    (1, 5, 8)
  """

  def __init__(self, *args, attention_fn: Callable[..., jax.Array] = dot_product_attention, **kwargs):
    super().__init__(*args, attention_fn=attention_fn, **kwargs)
