"""Flax linen attention layers whose attention dropout stores no mask."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from jaxdrop import _checks
from jaxdrop.attention import Implementation, dot_product_attention, takes_drop_key, with_implementation
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


def _call_with_drop_key(module, call, rate, deterministic: bool | None, dropout_rng: jax.Array | None):
  """``call(deterministic, dropout_rng)`` with DropKey at ``rate`` (the layer's ``drop_key_rate`` unless
  given) bound into the layer's ``attention_fn`` for this call: Flax passes ``deterministic=True`` to it when
  the layer's ``dropout_rate`` is 0, so the layer merges its own ``deterministic`` and draws the key (from
  ``"dropout"``, as Flax's attention dropout; one key, split in two when both are active)."""
  rate = _checks.check_rate(module.drop_key_rate if rate is None else rate, name="drop_key_rate")
  if isinstance(rate, float) and rate == 0.0:
    return call(deterministic, dropout_rng)
  name = type(module).__name__
  if not takes_drop_key(module.attention_fn):
    raise ValueError(f"{name}: drop_key_rate needs jaxdrop.attention.dot_product_attention as attention_fn,"
                     f" got {module.attention_fn!r}; drop drop_key_rate or attention_fn=.")
  merged = nn.merge_param("deterministic", module.deterministic, deterministic)
  if not merged and dropout_rng is None:
    if not (module.has_rng("dropout") or module.has_rng("params")):  # make_rng falls back to "params"
      raise missing_rng_error(name, "dropout", "dropout_rng")
    dropout_rng = module.make_rng("dropout")
  plain = module.attention_fn
  object.__setattr__(module, "attention_fn", functools.partial(plain, drop_key_rate=rate,
                                                               drop_key_deterministic=bool(merged)))
  try:  # (flax reads attention_fn during the call; the layer's own is restored after it)
    return call(deterministic, dropout_rng)
  finally:
    object.__setattr__(module, "attention_fn", plain)


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
    drop_key_rate: DropKey's rate (drop probability of each attention logit, before the softmax; see
      :func:`jaxdrop.attention.dot_product_attention`), while training, keyed from ``"dropout"``; a call's
      ``drop_key_rate=`` overrides it (a per-layer schedule: :func:`jaxdrop.attention.drop_key_rates`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.1, implementation="blockwise")
    >>> x = jnp.ones((1, 5, 8))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 5, 8)
    >>> drop_key = jdl.MultiHeadDotProductAttention(num_heads=2, drop_key_rate=0.2)
    >>> drop_key.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 5, 8)
  """

  attention_fn: Callable[..., jax.Array] = dot_product_attention
  implementation: Implementation | None = None
  drop_key_rate: float = 0.0

  def __post_init__(self) -> None:
    _bind_implementation(self)
    super().__post_init__()

  @nn.compact
  def __call__(
      self, *args: Any, deterministic: bool | None = None, dropout_rng: jax.Array | None = None,
      drop_key_rate: float | jax.Array | None = None, **kwargs: Any
  ) -> Any:
    """Flax's call (``inputs_q``, ``inputs_k``, ``inputs_v``, ``mask=``, ...) and ``drop_key_rate=`` (for this
    call); training without a ``"dropout"`` rng is the error the other jaxdrop linen layers give."""
    _check_dropout_rng(self, deterministic, dropout_rng)
    call = lambda det, rng: super(MultiHeadDotProductAttention, self).__call__(
        *args, deterministic=det, dropout_rng=rng, **kwargs)
    return _call_with_drop_key(self, call, drop_key_rate, deterministic, dropout_rng)


class SelfAttention(nn.SelfAttention):
  """``flax.linen.SelfAttention`` with :func:`jaxdrop.attention.dot_product_attention` (see
  :class:`MultiHeadDotProductAttention`, also for ``implementation`` and ``drop_key_rate``).

  Example:
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.SelfAttention(num_heads=2, dropout_rate=0.1, implementation="blockwise")
    >>> layer.attention_fn.keywords
    {'implementation': 'blockwise'}
  """

  attention_fn: Callable[..., jax.Array] = dot_product_attention
  implementation: Implementation | None = None
  drop_key_rate: float = 0.0

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
      drop_key_rate: float | jax.Array | None = None,
  ) -> Any:
    """Flax's call and ``drop_key_rate=`` (for this call); training without a ``"dropout"`` rng is the error
    the other jaxdrop linen layers give."""
    _check_dropout_rng(self, deterministic, dropout_rng)
    call = lambda det, rng: super(SelfAttention, self).__call__(inputs_q, mask=mask, deterministic=det,
                                                                dropout_rng=rng, sow_weights=sow_weights)
    return _call_with_drop_key(self, call, drop_key_rate, deterministic, dropout_rng)
