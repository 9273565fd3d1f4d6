"""A Keras-style LSTM layer for NNX, with input and recurrent dropout."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdrop._lstm import kernel_init, lstm, recurrent_kernel_init, unit_forget_bias
from jaxdrop.nnx._base import StochasticModule

__all__ = ["LSTM"]


class LSTM(StochasticModule):
  """:func:`jaxdrop.lstm` as an NNX layer: Keras' ``LSTM(units, dropout, recurrent_dropout)``.

  Args:
    in_features: size of each input vector.
    hidden_features: number of units.
    dropout: drop probability of the inputs (mask fixed over time).
    recurrent_dropout: drop probability of the recurrent state (mask fixed over time).
    return_sequences: return every step's state instead of the last one.
    unroll: time steps per scan iteration.
    mask_bits: mask precision.
    gate_masks: ``"keras"`` (default: a mask per gate when ``recurrent_dropout``
      is not 0, as Keras 3) or ``"shared"`` (one mask for all gates); see
      :func:`jaxdrop.lstm`.
    zoneout_cell, zoneout_hidden: zoneout probabilities of the cell and hidden
      state (a fresh mask each step; the expected update when deterministic).
    kernel_init, recurrent_kernel_init, bias_init: Keras' defaults.
    deterministic: ``True`` for evaluation.
    rng_collection: the dropout stream.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.LSTM(3, 8, dropout=0.25, recurrent_dropout=0.25, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 5, 3))).shape
    (2, 8)
  """

  _rngs_optional = False  # its rngs also draws the parameters

  def __init__(
      self,
      in_features: int,
      hidden_features: int,
      *,
      dropout: float = 0.0,
      recurrent_dropout: float = 0.0,
      return_sequences: bool = False,
      unroll: int = 1,
      mask_bits: int = 16,
      gate_masks: Literal["keras", "shared"] = "keras",
      zoneout_cell: float = 0.0,
      zoneout_hidden: float = 0.0,
      kernel_init: Any = kernel_init,
      recurrent_kernel_init: Any = recurrent_kernel_init,
      bias_init: Any = unit_forget_bias,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
    self.return_sequences, self.unroll, self.mask_bits = return_sequences, unroll, mask_bits
    self.gate_masks, self.zoneout_cell, self.zoneout_hidden = gate_masks, zoneout_cell, zoneout_hidden
    h = hidden_features
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, 4 * h), jnp.float32))
    self.recurrent_kernel = nnx.Param(recurrent_kernel_init(rngs.params(), (h, 4 * h), jnp.float32))
    self.bias = nnx.Param(bias_init(rngs.params(), (4 * h,), jnp.float32))

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      dropout: float | jax.Array | None = None, recurrent_dropout: float | jax.Array | None = None,
  ) -> jax.Array:
    """Runs the layer; ``dropout`` and ``recurrent_dropout`` override the attributes for this call."""
    dropout = self.dropout if dropout is None else dropout
    recurrent_dropout = self.recurrent_dropout if recurrent_dropout is None else recurrent_dropout
    zoneout = (self.zoneout_cell, self.zoneout_hidden)
    deterministic, key = self.resolve(deterministic, rngs, dropout, recurrent_dropout, *zoneout)
    rates = (0.0, 0.0) if deterministic else (dropout, recurrent_dropout)
    params = {"kernel": self.kernel[...], "recurrent_kernel": self.recurrent_kernel[...],
              "bias": self.bias[...]}
    return lstm(
        params, inputs, key=key, dropout=rates[0], recurrent_dropout=rates[1],
        return_sequences=self.return_sequences, unroll=self.unroll, mask_bits=self.mask_bits,
        gate_masks=self.gate_masks, zoneout_cell=zoneout[0], zoneout_hidden=zoneout[1],
    )
