"""Gaussian (multiplicative) dropout (Srivastava et al., 2014, section 10)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdrop import _checks
from jaxdrop._masked import mask_shape_for, standard_normal

__all__ = ["gaussian_dropout"]


def gaussian_dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
  """Multiplies ``x`` by Gaussian noise of mean 1 and variance ``rate / (1 - rate)``.

  This is the continuous counterpart of inverted dropout with drop probability
  ``rate``: Bernoulli noise ``m / (1 - rate)`` has the same mean (1) and
  variance (``rate / (1 - rate)``), as in ``keras.layers.GaussianDropout``.
  Evaluation is the identity. The noise comes from the same Philox stream as
  the dropout masks (derived from ``key``).

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0.
    x: a floating-point array; its dtype is preserved.
    rate: drop probability in ``[0, 1)``; ``rate == 1`` has infinite variance
      and is rejected (a traced rate outside ``[0, 1)`` yields NaN/inf).
    broadcast_dims: axes along which one noise value is shared.

  Returns:
    ``x * (1 + sqrt(rate / (1 - rate)) * eps)`` with ``eps ~ N(0, 1)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.gaussian_dropout(jax.random.key(0), jnp.ones(100_000), 0.5)
    >>> round(float(y.mean()), 1), round(float(y.var()), 1)
    (1.0, 1.0)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate, allow_one=False)
  noise_shape = mask_shape_for(x.shape, broadcast_dims)
  if isinstance(rate, float) and rate == 0.0:
    return x
  key = _checks.check_key(key, fn="jaxdrop.gaussian_dropout")
  compute_dtype = _checks.compute_dtype(x.dtype)
  if isinstance(rate, float):
    stddev = jnp.asarray(math.sqrt(rate / (1.0 - rate)), compute_dtype)
  else:
    rate = jnp.asarray(rate, compute_dtype)
    valid = (rate >= 0) & (rate < 1)
    stddev = jnp.where(valid, jnp.sqrt(rate / (1 - rate)), jnp.nan)
  noise = 1 + stddev * standard_normal(key, noise_shape, compute_dtype)
  return (x.astype(compute_dtype) * noise).astype(x.dtype)
