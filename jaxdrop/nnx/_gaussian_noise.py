"""Additive Gaussian noise as an NNX layer."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jaxdrop._gaussian_noise import check_stddev, gaussian_noise, needs_noise
from jaxdrop.nnx._base import StochasticModule

__all__ = ["GaussianNoise"]


class GaussianNoise(StochasticModule):
  """:func:`jaxdrop.gaussian_noise` as an NNX layer, as ``keras.layers.GaussianNoise`` (identity when
  deterministic).

  Args:
    stddev: the noise's standard deviation; a call may override it with ``stddev=``.
    broadcast_dims: axes that share one noise value.
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the stream forked from ``rngs``.
    rngs: ``nnx.Rngs`` (or a stream) to draw the noise from.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.GaussianNoise(0.1, rngs=nnx.Rngs(dropout=0))
    >>> layer(jnp.ones((2, 4))).shape
    (2, 4)
    >>> layer.eval()
    >>> bool((layer(jnp.ones((2, 4))) == 1).all())
    True
  """

  def __init__(
      self,
      stddev: float,
      *,
      broadcast_dims: Sequence[int] = (),
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs | nnx.RngStream | None = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.stddev, self.broadcast_dims = check_stddev(stddev), tuple(broadcast_dims)

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      stddev: float | jax.Array | None = None,
  ) -> jax.Array:
    """Adds the noise (training unless deterministic); ``stddev`` overrides the attribute for this call."""
    stddev = check_stddev(self.stddev if stddev is None else stddev)
    deterministic, key = self.resolve(deterministic, rngs, random=needs_noise(stddev))
    if deterministic:
      return inputs
    return gaussian_noise(key, inputs, stddev, broadcast_dims=self.broadcast_dims)
