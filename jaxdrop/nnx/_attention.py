"""Flax NNX attention whose attention dropout stores no mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxdrop.attention import Implementation, dot_product_attention, with_implementation
from jaxdrop.nnx._base import stream

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nnx.MultiHeadAttention):
  """``flax.nnx.MultiHeadAttention`` with :func:`jaxdrop.attention.dot_product_attention`.

  Same arguments, parameters and call as Flax's layer; only the default
  ``attention_fn`` differs, so that the attention dropout (``dropout_rate``)
  keeps no mask for the backward pass, and one argument is added:
  ``implementation``, the path of :func:`jaxdrop.attention.dot_product_attention`
  (``None``: chosen by the lengths; ``"reference"``; ``"blockwise"``: memory
  linear in the length, the same dropout mask), only with the default
  ``attention_fn``. ``model.train()`` / ``model.eval()`` switch dropout as usual.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.1,
    ...                                decode=False, implementation="blockwise", rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 5, 8)), deterministic=False).shape
    (1, 5, 8)
  """

  def __init__(
      self, *args: Any, attention_fn: Callable[..., jax.Array] = dot_product_attention,
      implementation: Implementation | None = None, **kwargs: Any
  ):
    attention_fn = with_implementation(implementation, attention_fn, owner=type(self).__name__)
    rngs = kwargs.get("rngs")
    if isinstance(rngs, nnx.Rngs) and kwargs.get("keep_rngs", True) and kwargs.get("dropout_rate", 0.0) > 0:
      # Where flax forks rngs.dropout (a raw AttributeError when there is none), say which rngs to pass.
      stream(rngs, "dropout", type(self).__name__,
             fix=", or with keep_rngs=False and pass rngs= at call time")
    super().__init__(*args, attention_fn=attention_fn, **kwargs)
    self.implementation = implementation

  def __call__(self, *args: Any, rngs: nnx.Rngs | nnx.RngStream | None = None, **kwargs: Any) -> jax.Array:
    """Flax's call; an ``nnx.Rngs`` without a ``"dropout"`` stream is a ``ValueError`` that says what to
    pass."""
    if isinstance(rngs, nnx.Rngs):  # flax takes rngs.dropout of it, also when nothing is dropped
      rngs = stream(rngs, "dropout", type(self).__name__, at_call=True, fix=" or an nnx.RngStream")
    return super().__call__(*args, rngs=rngs, **kwargs)
