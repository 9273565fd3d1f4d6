"""Alpha dropout: dropout that keeps SELU's zero mean and unit variance."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdrop import _bits, _checks
from jaxdrop._masked import keep_for, mask_shape_for, masked_affine

__all__ = ["alpha_dropout"]

# SELU's negative saturation value, -scale * alpha (Klambauer et al., 2017).
SELU_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


def _affine_params(keep):
  """``a``, ``b`` and the dropped value ``a * alpha' + b`` for keep probability ``keep``."""
  sat = SELU_SATURATION
  if isinstance(keep, float):
    a = (keep + sat**2 * keep * (1.0 - keep)) ** -0.5
    b = -a * sat * (1.0 - keep)
    return jnp.float32(a), jnp.float32(b), jnp.float32(a * sat + b)
  positive = keep > 0
  safe = jnp.where(positive, keep, 1.0)
  a = (safe + sat**2 * safe * (1.0 - safe)) ** -0.5
  b = -a * sat * (1.0 - safe)
  zero = jnp.zeros_like(a)
  return jnp.where(positive, a, zero), jnp.where(positive, b, zero), jnp.where(positive, a * sat + b, zero)


def alpha_dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    mask_bits: int = 16,
) -> jax.Array:
  """Alpha dropout for self-normalizing (SELU) networks.

  Dropped units are set to SELU's saturation value ``alpha' = -1.7581`` instead
  of 0, then everything goes through the affine map ``a * y + b`` chosen so
  that inputs with zero mean and unit variance keep them. ``rate`` is the drop
  probability (not the keep probability); ``rate == 1`` returns zeros (the limit
  of the affine map), as ``torch.nn.functional.alpha_dropout`` does. Evaluation
  is the identity. Precision and ``mask_bits`` are those of
  :func:`jaxdrop.dropout` (8-bit masks use the realized keep probability in
  ``a`` and ``b``).

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    x: a floating-point array, ideally standardized SELU activations.
    rate: drop probability in ``[0, 1]``.
    broadcast_dims: axes along which one mask value is shared.
    mask_bits: 16 (default), 8 or 32.

  Returns:
    An array like ``x``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> x = jax.random.normal(jax.random.key(0), (100_000,))
    >>> y = jaxdrop.alpha_dropout(jax.random.key(1), x, 0.2)
    >>> abs(float(y.mean())) < 0.01, round(float(y.std()), 2)
    (True, 1.0)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  _checks.check_mask_bits(mask_bits)
  mask_shape = mask_shape_for(x.shape, broadcast_dims)
  if isinstance(rate, float):
    if rate == 0.0:
      return x
    if rate == 1.0:
      return jnp.zeros_like(x)
  key = _checks.check_key(key, fn="jaxdrop.alpha_dropout")
  keep = keep_for(rate, mask_bits)
  a, b, fill = _affine_params(keep.probability)
  if not isinstance(keep.valid, bool):
    a, fill = jnp.where(keep.valid, a, jnp.nan), jnp.where(keep.valid, fill, jnp.nan)
  return masked_affine(
      _bits.derive_seed(key), x, keep.threshold, a, b, fill, mask_shape=mask_shape, bits=mask_bits
  )
