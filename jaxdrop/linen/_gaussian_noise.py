"""Additive Gaussian noise as a linen layer."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxdrop._gaussian_noise import check_stddev, gaussian_noise, needs_noise
from jaxdrop.linen._base import StochasticModule

__all__ = ["GaussianNoise"]


class GaussianNoise(StochasticModule):
  """:func:`jaxdrop.gaussian_noise` as a linen layer, as ``keras.layers.GaussianNoise`` (identity when
  deterministic).

  Attributes:
    stddev: the noise's standard deviation; a call may override it with ``stddev=``.
    broadcast_dims: axes that share one noise value.
    deterministic: ``True`` for evaluation; or pass it at call time.
    rng_collection: the rng stream to draw from (``"dropout"``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.GaussianNoise(0.1)
    >>> x = jnp.ones((2, 4))
    >>> bool((layer.apply({}, x, deterministic=True) == x).all())
    True
    >>> layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}).shape
    (2, 4)
  """

  stddev: float
  broadcast_dims: Sequence[int] = ()

  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      stddev: float | jax.Array | None = None,
  ) -> jax.Array:
    """Adds the noise (training unless deterministic); ``stddev`` overrides the attribute for this call."""
    stddev = check_stddev(self.stddev if stddev is None else stddev)
    deterministic, key = self.resolve(deterministic, rng, random=needs_noise(stddev))
    if deterministic:
      return inputs
    return gaussian_noise(key, inputs, stddev, broadcast_dims=self.broadcast_dims)
