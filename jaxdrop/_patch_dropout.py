"""Token (patch) dropout: keep a random subset of each example's tokens, as timm's ``PatchDropout``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdrop import _bits, _checks

__all__ = ["patch_dropout", "patch_dropout_keep_count"]


def patch_dropout_keep_count(num_patches: int, rate: float) -> int:
  """How many of ``num_patches`` tokens :func:`patch_dropout` keeps: ``max(1, int(num_patches * (1-rate)))``.

  timm's formula, in Python floats (so ``int`` rounds the same products down as timm does).

  Example:
    >>> patch_dropout_keep_count(196, 0.5), patch_dropout_keep_count(10, 0.99)
    (98, 1)
  """
  return max(1, int(num_patches * (1.0 - rate)))


def _check_prefix(num_prefix_tokens, length: int) -> int:
  if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
    raise ValueError(f"num_prefix_tokens must be an int >= 0 (the class/register tokens always kept), got"
                     f" num_prefix_tokens={num_prefix_tokens!r}.")
  if num_prefix_tokens >= length:
    raise ValueError(f"num_prefix_tokens={num_prefix_tokens} leaves no patch tokens to drop in a sequence of"
                     f" {length} tokens; pass fewer prefix tokens (or a longer sequence).")
  return num_prefix_tokens


def patch_dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: float,
    *,
    num_prefix_tokens: int = 1,
    ordered: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Keeps a random subset of each example's patch tokens (timm's ``PatchDropout``; Liu et al., 2022).

  ``x`` is ``(batch, tokens, ...)``: the first ``num_prefix_tokens`` tokens
  (class and register tokens) are always kept, in front; of the ``L`` others,
  ``num_keep = max(1, int(L * (1 - rate)))`` are kept per example
  (:func:`patch_dropout_keep_count`), so the output has the static length
  ``num_prefix_tokens + num_keep``. Kept tokens are not rescaled, and at
  evaluation the layer is the identity (as timm's).

  How the subset is drawn: the key is consumed once for the seed of jaxdrop's
  mask generator (:func:`jaxdrop.dropout`'s), whose stream gives one ``uint32``
  word per patch token, ``w = random_words(seed, (batch, L))``; each example
  keeps the ``num_keep`` tokens with the largest words, largest first (ties,
  of probability about ``L**2 / 2**33``, to the lower index), i.e. a uniformly
  random subset in a uniformly random order, as timm's ``argsort(randn)``
  gives. The words are elementwise in the token's global index, so a sharded
  batch draws bitwise the unsharded subsets.

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0.
    x: a floating-point array ``(batch, tokens, ...)``.
    rate: the fraction of patch tokens to drop, a Python float in ``[0, 1)``
      (it sets the output's static length, so it cannot be traced).
    num_prefix_tokens: leading tokens never dropped (timm's default, 1).
    ordered: keep the kept tokens in their original order (timm's ``ordered``);
      by default they come in the random order of their draw.
    return_indices: also return the kept tokens' indices (timm's
      ``return_indices``).

  Returns:
    The kept tokens, ``(batch, num_prefix_tokens + num_keep, ...)``; with
    ``return_indices``, also the ``int32`` indices ``(batch, num_keep)`` of the
    kept patch tokens among the ``L`` after the prefix (``x[:, num_prefix_tokens:]``),
    in the output's order. ``rate == 0`` returns ``x`` itself and the indices
    ``0 .. L - 1``.

  Raises:
    ValueError: for a rate outside ``[0, 1)`` or a traced rate, an input with
      fewer than 2 dimensions, or ``num_prefix_tokens`` negative or leaving no
      patch token.
    TypeError: if ``x`` is not floating, or ``ordered`` / ``return_indices`` is
      not a bool.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> tokens = jnp.ones((2, 1 + 16, 8))                # a class token and 16 patches
    >>> y, kept = jaxdrop.patch_dropout(jax.random.key(0), tokens, 0.25, return_indices=True)
    >>> y.shape, kept.shape
    ((2, 13, 8), (2, 12))
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate, allow_one=False)
  if not isinstance(rate, float):
    raise ValueError("patch_dropout needs a concrete rate (a Python float): it sets the output's static"
                     " length num_prefix_tokens + max(1, int(L * (1 - rate))); got a traced rate.")
  for name, flag in (("ordered", ordered), ("return_indices", return_indices)):
    if not isinstance(flag, bool):
      raise TypeError(f"{name} must be True or False, got {name}={flag!r}.")
  if x.ndim < 2:
    raise ValueError(f"patch_dropout expects tokens of shape (batch, tokens, ...), got shape {x.shape}.")
  prefix = _check_prefix(num_prefix_tokens, x.shape[1])
  batch, length = x.shape[0], x.shape[1] - prefix
  if rate == 0.0:
    every = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    return (x, every) if return_indices else x
  key = _checks.check_key(key, fn="jaxdrop.patch_dropout")
  num_keep = patch_dropout_keep_count(length, rate)
  words = _bits.random_words(_bits.derive_seed(key), (batch, length))
  # Largest words first, ties to the lower index: a stable ascending sort of ~words (lax.top_k would give the
  # same indices, but XLA gathers a batch-sharded top_k onto every device; a sort partitions along the batch).
  kept = jnp.argsort(~words, axis=-1, stable=True)[:, :num_keep].astype(jnp.int32)
  if ordered:
    kept = jnp.sort(kept, axis=-1)
  patches = x[:, prefix:]
  index = kept.reshape(kept.shape + (1,) * (x.ndim - 2))
  out = jnp.take_along_axis(patches, index, axis=1)
  if prefix:
    out = jnp.concatenate([x[:, :prefix], out], axis=1)
  return (out, kept) if return_indices else out
