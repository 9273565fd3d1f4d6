"""Flax linen attention layers whose attention dropout stores no mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from jaxdrop.attention import Implementation, dot_product_attention, with_implementation
from jaxdrop.linen._base import missing_rng_error

__all__ = ["MultiHeadDotProductAttention", "SelfAttention"]


def _check_dropout_rng(module: nn.MultiHeadDotProductAttention, deterministic: bool | None,
                       dropout_rng: jax.Array | None) -> None:
  """Raises the error of the other jaxdrop linen layers where flax's ``make_rng("dropout")`` would find no
  stream (flax's own says ``None needs PRNG for "dropout"``); else does nothing (flax decides the rest)."""
  if module.dropout_rate <= 0.0 or dropout_rng is not None:
    return
  if (module.deterministic is None) == (deterministic is None):  # neither or both: flax's merge_param says so
    return
  if module.deterministic if deterministic is None else deterministic:
    return
  if not (module.has_rng("dropout") or module.has_rng("params")):  # make_rng falls back to "params"
    raise missing_rng_error(type(module).__name__, "dropout", "dropout_rng")


def _bind_implementation(module: MultiHeadDotProductAttention | SelfAttention) -> None:
  """Sets the layer's ``attention_fn`` to jaxdrop's with its ``implementation`` bound (before flax freezes the
  fields; a clone with another ``implementation`` binds it again)."""
  fn = with_implementation(module.implementation, module.attention_fn, owner=type(module).__name__)
  object.__setattr__(module, "attention_fn", fn)


class MultiHeadDotProductAttention(nn.MultiHeadDotProductAttention):
  """``flax.linen.MultiHeadDotProductAttention`` with :func:`jaxdrop.attention.dot_product_attention`.

  Same attributes, parameters and call signature as Flax's layer (a checkpoint
  of one loads into the other); only the default ``attention_fn`` differs, so
  that the attention dropout (``dropout_rate``, from the ``"dropout"`` rng
  stream) keeps no mask for the backward pass, and one attribute is added.

  Attributes:
    implementation: the path of :func:`jaxdrop.attention.dot_product_attention`:
      ``None`` (chosen by the lengths), ``"reference"`` or ``"blockwise"``
      (memory linear in the length; the same dropout mask). Only with the
      default ``attention_fn``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1, implementation="blockwise")
    >>> x = jnp.ones((1, 5, 8))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 5, 8)
  """

  attention_fn: Callable[..., jax.Array] = dot_product_attention
  implementation: Implementation | None = None

  def __post_init__(self) -> None:
    _bind_implementation(self)
    super().__post_init__()

  @nn.compact
  def __call__(
      self, *args: Any, deterministic: bool | None = None, dropout_rng: jax.Array | None = None, **kwargs: Any
  ) -> Any:
    """Flax's call (``inputs_q``, ``inputs_k``, ``inputs_v``, ``mask=``, ...); training without a
    ``"dropout"`` rng is the error the other jaxdrop linen layers give."""
    _check_dropout_rng(self, deterministic, dropout_rng)
    return super().__call__(*args, deterministic=deterministic, dropout_rng=dropout_rng, **kwargs)


class SelfAttention(nn.SelfAttention):
  """``flax.linen.SelfAttention`` with :func:`jaxdrop.attention.dot_product_attention` (see
  :class:`MultiHeadDotProductAttention`, also for ``implementation``).

  Example:
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.SelfAttention(num_heads=2, dropout_rate=0.1, implementation="blockwise")
    >>> layer.attention_fn.keywords
    {'implementation': 'blockwise'}
  """

  attention_fn: Callable[..., jax.Array] = dot_product_attention
  implementation: Implementation | None = None

  def __post_init__(self) -> None:
    _bind_implementation(self)
    super().__post_init__()

  @nn.compact
  def __call__(  # type: ignore[override]  # flax.linen.SelfAttention's signature, which narrows its base's
      self,
      inputs_q: jax.Array,
      mask: jax.Array | None = None,
      deterministic: bool | None = None,
      dropout_rng: jax.Array | None = None,
      sow_weights: bool = False,
  ) -> Any:
    """Flax's call; training without a ``"dropout"`` rng is the error the other jaxdrop linen layers give."""
    _check_dropout_rng(self, deterministic, dropout_rng)
    return super().__call__(inputs_q, mask=mask, deterministic=deterministic, dropout_rng=dropout_rng,
                            sow_weights=sow_weights)
