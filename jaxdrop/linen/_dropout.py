"""linen layers for the activation-dropout family; each calls its pure function."""

from __future__ import annotations

from collections.abc import Sequence

from jaxdrop._alpha_dropout import alpha_dropout
from jaxdrop._drop_block import drop_block
from jaxdrop._drop_path import drop_path
from jaxdrop._dropout import Mode, dropout, dropout_eval
from jaxdrop._gaussian_dropout import gaussian_dropout
from jaxdrop.linen._base import RateModule

__all__ = ["AlphaDropout", "DropBlock", "DropPath", "Dropout", "GaussianDropout"]


class Dropout(RateModule):
  """:func:`jaxdrop.dropout` as a linen layer, a drop-in for ``flax.linen.Dropout``.

  Attributes:
    rate: drop probability (not the keep probability).
    broadcast_dims: axes that share one mask value.
    mode: ``"inverted"`` (scale while training) or ``"classic"`` (scale by the
      keep probability at evaluation).
    mask_bits: mask precision, 16 (default), 8 or 32.
    deterministic: ``True`` for evaluation; or pass it at call time.
    rng_collection: the rng stream to draw from (``"dropout"``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.Dropout(0.5)
    >>> y = layer.apply({}, jnp.ones((2, 4)), deterministic=False,
    ...                 rngs={"dropout": jax.random.key(0)})
    >>> bool(((y == 0) | (y == 2)).all())
    True
  """

  broadcast_dims: Sequence[int] = ()
  mode: Mode = "inverted"
  mask_bits: int = 16

  def _train(self, key, inputs, rate):
    return dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims, mode=self.mode,
                   mask_bits=self.mask_bits)

  def _eval(self, inputs, rate):
    return dropout_eval(inputs, rate, mode=self.mode, mask_bits=self.mask_bits)


class GaussianDropout(RateModule):
  """:func:`jaxdrop.gaussian_dropout` as a linen layer (identity when deterministic).

  Attributes:
    rate: drop probability in ``[0, 1)``; the noise variance is ``rate / (1 - rate)``.
    broadcast_dims: axes that share one noise value.
  """

  broadcast_dims: Sequence[int] = ()

  def _train(self, key, inputs, rate):
    return gaussian_dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims)


class AlphaDropout(RateModule):
  """:func:`jaxdrop.alpha_dropout` as a linen layer, for SELU networks.

  Attributes:
    rate: drop probability (not the keep probability).
    broadcast_dims: axes that share one mask value.
    mask_bits: mask precision.
  """

  broadcast_dims: Sequence[int] = ()
  mask_bits: int = 16

  def _train(self, key, inputs, rate):
    return alpha_dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims, mask_bits=self.mask_bits)


class DropPath(RateModule):
  """:func:`jaxdrop.drop_path` (stochastic depth) as a linen layer.

  Attributes:
    rate: probability of dropping an example's branch.
    batch_axis: the axis that indexes examples.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision.
    scale_by_keep: ``False``: survivors unscaled while training (timm's option).
  """

  batch_axis: int = 0
  mode: Mode = "inverted"
  mask_bits: int = 16
  scale_by_keep: bool = True

  def _train(self, key, inputs, rate):
    return drop_path(key, inputs, rate, batch_axis=self.batch_axis, mode=self.mode, mask_bits=self.mask_bits,
                     scale_by_keep=self.scale_by_keep)

  def _eval(self, inputs, rate):
    return dropout_eval(inputs, rate, mode=self.mode, mask_bits=self.mask_bits)


class DropBlock(RateModule):
  """:func:`jaxdrop.drop_block` for NHWC feature maps as a linen layer.

  Attributes:
    rate: target fraction of dropped units.
    block_size: side of the dropped squares.
    broadcast_dims: share the mask across batch (0) and/or channels (3).
    mask_bits: precision of the block-centre draws.
    with_noise: normal noise in the dropped blocks, kept units unscaled (timm's option).
  """

  block_size: int = 7
  broadcast_dims: Sequence[int] = ()
  mask_bits: int = 16
  with_noise: bool = False

  def _train(self, key, inputs, rate):
    return drop_block(key, inputs, rate, block_size=self.block_size, broadcast_dims=self.broadcast_dims,
                      mask_bits=self.mask_bits, with_noise=self.with_noise)
