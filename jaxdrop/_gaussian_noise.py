"""Additive Gaussian noise (Keras' ``GaussianNoise``): a regularizer for inputs and activations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxdrop import _checks
from jaxdrop._masked import mask_shape_for, standard_normal

__all__ = ["check_stddev", "gaussian_noise", "needs_noise"]


def check_stddev(stddev: Any) -> float | jax.Array:
  """``stddev`` as a Python float when concrete (a finite number >= 0, else ``ValueError``), or the traced
  scalar unchanged."""
  value = _checks.concrete_scalar(stddev)
  if value is None:
    if isinstance(stddev, bool) or not hasattr(stddev, "dtype"):
      raise TypeError(f"stddev must be a real number (the noise's standard deviation), got {stddev!r}.")
    if jnp.ndim(stddev) != 0 or not jnp.issubdtype(jnp.result_type(stddev), jnp.floating):
      raise TypeError(f"stddev must be a floating scalar, got shape {jnp.shape(stddev)} and dtype"
                      f" {jnp.result_type(stddev)}.")
    return stddev
  if not (math.isfinite(value) and value >= 0):
    raise ValueError(
        f"stddev must be a finite number >= 0 (the noise's standard deviation), got stddev={stddev!r}."
    )
  return value


def needs_noise(stddev: Any) -> bool:
  """False when ``stddev`` is a concrete 0 (the layer is the identity and needs no key)."""
  return _checks.concrete_scalar(stddev) != 0.0


def gaussian_noise(
    key: jax.Array | None,
    x: jax.Array,
    stddev: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
  """Adds zero-mean Gaussian noise of standard deviation ``stddev`` to ``x``.

  As ``keras.layers.GaussianNoise``: a training-time regularizer (and a
  form of data augmentation for inputs); evaluation is the identity. The
  noise comes from the same Philox stream as the dropout masks (derived from
  ``key``), in float32 for low-precision inputs; the gradient with respect to
  ``x`` is the identity, so nothing is stored for the backward pass.

  Args:
    key: a PRNG key; may be ``None`` only when ``stddev`` is 0.
    x: a floating-point array; its dtype is preserved.
    stddev: the noise's standard deviation, ``>= 0`` (a traced value is fine;
      an invalid traced value gives NaN).
    broadcast_dims: axes along which one noise value is shared.

  Returns:
    ``x + stddev * eps`` with ``eps ~ N(0, 1)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.gaussian_noise(jax.random.key(0), jnp.ones(100_000), 0.5)
    >>> round(float(y.mean()), 2), round(float(y.std()), 2)
    (1.0, 0.5)
  """
  x = _checks.check_floating(x)
  stddev = check_stddev(stddev)
  noise_shape = mask_shape_for(x.shape, broadcast_dims)
  if isinstance(stddev, float) and stddev == 0.0:
    return x
  key = _checks.check_key(key, fn="jaxdrop.gaussian_noise")
  compute_dtype = _checks.compute_dtype(x.dtype)
  scale = jnp.asarray(stddev, compute_dtype)
  if not isinstance(stddev, float):  # traced: an invalid value becomes NaN, never silently wrong noise
    scale = jnp.where(jnp.isfinite(scale) & (scale >= 0), scale, jnp.nan)
  noise = scale * standard_normal(key, noise_shape, compute_dtype)
  return (x.astype(compute_dtype) + noise).astype(x.dtype)
