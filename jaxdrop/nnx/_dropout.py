"""NNX layers for the activation-dropout family; each calls its pure function."""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx

from jaxdrop._alpha_dropout import alpha_dropout
from jaxdrop._drop_block import drop_block
from jaxdrop._drop_path import drop_path
from jaxdrop._dropout import Mode, dropout, dropout_eval
from jaxdrop._gaussian_dropout import gaussian_dropout
from jaxdrop.nnx._base import RateModule

__all__ = ["AlphaDropout", "DropBlock", "DropPath", "Dropout", "GaussianDropout"]

Rngs = nnx.Rngs | nnx.RngStream | None


class Dropout(RateModule):
  """:func:`jaxdrop.dropout` as an NNX layer, a drop-in for ``flax.nnx.Dropout``.

  Args:
    rate: drop probability (not the keep probability).
    broadcast_dims: axes that share one mask value.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision, 16 (default), 8 or 32.
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the stream forked from ``rngs``.
    rngs: random streams (optional if a key is passed at call time).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 4)))
    >>> bool(((y == 0) | (y == 2)).all())
    True
  """

  def __init__(
      self,
      rate: float,
      *,
      broadcast_dims: Sequence[int] = (),
      mode: Mode = "inverted",
      mask_bits: int = 16,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.broadcast_dims, self.mode, self.mask_bits = rate, tuple(broadcast_dims), mode, mask_bits

  def _train(self, key, inputs, rate):
    return dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims, mode=self.mode,
                   mask_bits=self.mask_bits)

  def _eval(self, inputs, rate):
    return dropout_eval(inputs, rate, mode=self.mode, mask_bits=self.mask_bits)


class GaussianDropout(RateModule):
  """:func:`jaxdrop.gaussian_dropout` as an NNX layer (identity when deterministic)."""

  def __init__(
      self,
      rate: float,
      *,
      broadcast_dims: Sequence[int] = (),
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.broadcast_dims = rate, tuple(broadcast_dims)

  def _train(self, key, inputs, rate):
    return gaussian_dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims)


class AlphaDropout(RateModule):
  """:func:`jaxdrop.alpha_dropout` as an NNX layer, for SELU networks."""

  def __init__(
      self,
      rate: float,
      *,
      broadcast_dims: Sequence[int] = (),
      mask_bits: int = 16,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.broadcast_dims, self.mask_bits = rate, tuple(broadcast_dims), mask_bits

  def _train(self, key, inputs, rate):
    return alpha_dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims, mask_bits=self.mask_bits)


class DropPath(RateModule):
  """:func:`jaxdrop.drop_path` (stochastic depth) as an NNX layer."""

  def __init__(
      self,
      rate: float,
      *,
      batch_axis: int = 0,
      mode: Mode = "inverted",
      mask_bits: int = 16,
      scale_by_keep: bool = True,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.batch_axis, self.mode, self.mask_bits = rate, batch_axis, mode, mask_bits
    self.scale_by_keep = scale_by_keep

  def _train(self, key, inputs, rate):
    return drop_path(key, inputs, rate, batch_axis=self.batch_axis, mode=self.mode, mask_bits=self.mask_bits,
                     scale_by_keep=self.scale_by_keep)

  def _eval(self, inputs, rate):
    return dropout_eval(inputs, rate, mode=self.mode, mask_bits=self.mask_bits)


class DropBlock(RateModule):
  """:func:`jaxdrop.drop_block` for NHWC feature maps as an NNX layer."""

  def __init__(
      self,
      rate: float,
      *,
      block_size: int = 7,
      broadcast_dims: Sequence[int] = (),
      mask_bits: int = 16,
      with_noise: bool = False,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.block_size, self.mask_bits, self.with_noise = rate, block_size, mask_bits, with_noise
    self.broadcast_dims = tuple(broadcast_dims)

  def _train(self, key, inputs, rate):
    return drop_block(key, inputs, rate, block_size=self.block_size, broadcast_dims=self.broadcast_dims,
                      mask_bits=self.mask_bits, with_noise=self.with_noise)
