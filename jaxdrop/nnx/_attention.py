"""Flax NNX attention whose attention dropout stores no mask."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxdrop import _checks
from jaxdrop.attention import Implementation, dot_product_attention, takes_drop_key, with_implementation
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
  ``attention_fn``; and ``drop_key_rate``, DropKey's rate (drop probability of each
  attention logit before the softmax, see :func:`jaxdrop.attention.dot_product_attention`),
  which a call's ``drop_key_rate=`` overrides (a per-layer schedule:
  :func:`jaxdrop.attention.drop_key_rates`); its key comes from the layer's
  ``"dropout"`` stream (or the call's ``rngs``). ``model.train()`` / ``model.eval()``
  switch dropout and DropKey as usual.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.1,
    ...                                decode=False, implementation="blockwise", rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 5, 8)), deterministic=False).shape
    (1, 5, 8)
    >>> drop_key = jdx.MultiHeadAttention(num_heads=2, in_features=8, drop_key_rate=0.2, decode=False,
    ...                                   rngs=nnx.Rngs(0))
    >>> drop_key(jnp.ones((1, 5, 8)), deterministic=False).shape
    (1, 5, 8)
  """

  def __init__(
      self, *args: Any, attention_fn: Callable[..., jax.Array] = dot_product_attention,
      implementation: Implementation | None = None, drop_key_rate: float = 0.0, **kwargs: Any
  ):
    attention_fn = with_implementation(implementation, attention_fn, owner=type(self).__name__)
    name = type(self).__name__
    drop_key_rate = _checks.check_rate(drop_key_rate, name="drop_key_rate")
    if drop_key_rate and not takes_drop_key(attention_fn):
      raise ValueError(f"{name}: drop_key_rate needs jaxdrop.attention.dot_product_attention as attention_fn,"
                       f" got {attention_fn!r}; drop drop_key_rate or attention_fn=.")
    rngs = kwargs.get("rngs")
    keep_rngs = kwargs.get("keep_rngs", True)
    drop_key_rngs = None
    if isinstance(rngs, nnx.Rngs) and keep_rngs and kwargs.get("dropout_rate", 0.0) > 0:
      # Where flax forks rngs.dropout (a raw AttributeError when there is none), say which rngs to pass.
      stream(rngs, "dropout", name, fix=", or with keep_rngs=False and pass rngs= at call time")
    elif isinstance(rngs, nnx.Rngs) and keep_rngs and drop_key_rate:  # flax keeps no stream: DropKey's own
      fix = ", or with keep_rngs=False and pass rngs= at call time"
      drop_key_rngs = stream(rngs, "dropout", name, fix=fix).fork()
    super().__init__(*args, attention_fn=attention_fn, **kwargs)
    self.implementation = implementation
    self.drop_key_rate = drop_key_rate
    self.drop_key_rngs = nnx.data(drop_key_rngs)

  def __call__(self, *args: Any, rngs: nnx.Rngs | nnx.RngStream | None = None,
               deterministic: bool | None = None, drop_key_rate: float | jax.Array | None = None,
               **kwargs: Any) -> jax.Array:
    """Flax's call and ``drop_key_rate=`` (for this call); an ``nnx.Rngs`` without a ``"dropout"`` stream is a
    ``ValueError`` that says what to pass."""
    if isinstance(rngs, nnx.Rngs):  # flax takes rngs.dropout of it, also when nothing is dropped
      rngs = stream(rngs, "dropout", type(self).__name__, at_call=True, fix=" or an nnx.RngStream")
    call = lambda: super(MultiHeadAttention, self).__call__(*args, rngs=rngs, deterministic=deterministic,
                                                            **kwargs)
    rate = _checks.check_rate(self.drop_key_rate if drop_key_rate is None else drop_key_rate,
                              name="drop_key_rate")
    merged = self.deterministic if deterministic is None else deterministic
    if (isinstance(rate, float) and rate == 0.0) or merged:
      return call()
    name = type(self).__name__
    if merged is None:
      raise ValueError(f"No `deterministic` argument was provided to {name}: pass deterministic=True/False at"
                       " call time or to the constructor, or call model.train() / model.eval().")
    if not takes_drop_key(self.attention_fn):
      raise ValueError(f"{name}: drop_key_rate needs jaxdrop.attention.dot_product_attention as attention_fn,"
                       f" got {self.attention_fn!r}; drop drop_key_rate or attention_fn=.")
    bound: dict[str, Any] = {"drop_key_rate": rate, "drop_key_deterministic": False}
    if self.dropout_rate <= 0:  # flax passes no key: DropKey draws its own (else it splits flax's)
      source = rngs if rngs is not None else self.drop_key_rngs
      if source is None:
        raise ValueError(f"{name} is not deterministic but has no random stream for DropKey: construct it"
                         " with rngs=nnx.Rngs(dropout=0), pass rngs= at call time, or call model.eval() for"
                         " evaluation.")
      bound["drop_key_rng"] = source()
    plain = self.attention_fn
    object.__setattr__(self, "attention_fn", functools.partial(plain, **bound))
    try:  # (flax reads attention_fn during the call; the layer's own is restored after it)
      return call()
    finally:
      object.__setattr__(self, "attention_fn", plain)
