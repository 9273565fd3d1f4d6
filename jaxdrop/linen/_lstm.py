"""A Keras-style LSTM layer for linen, with input and recurrent dropout."""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdrop._lstm import kernel_init, lstm, recurrent_kernel_init, unit_forget_bias
from jaxdrop.linen._base import StochasticModule

__all__ = ["LSTM"]


class LSTM(StochasticModule):
  """:func:`jaxdrop.lstm` as a linen layer: Keras' ``LSTM(units, dropout, recurrent_dropout)``.

  Inputs are ``(..., time, features)``. Stack layers with
  ``return_sequences=True`` on all but the last, as in Keras.

  Attributes:
    features: number of units.
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

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.LSTM(8, dropout=0.25, recurrent_dropout=0.25, return_sequences=True)
    >>> x = jnp.ones((2, 5, 3))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (2, 5, 8)
  """

  features: int
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  return_sequences: bool = False
  unroll: int = 1
  mask_bits: int = 16
  gate_masks: Literal["keras", "shared"] = "keras"
  zoneout_cell: float = 0.0
  zoneout_hidden: float = 0.0
  kernel_init: Any = kernel_init
  recurrent_kernel_init: Any = recurrent_kernel_init
  bias_init: Any = unit_forget_bias

  @nn.compact
  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      dropout: float | jax.Array | None = None, recurrent_dropout: float | jax.Array | None = None,
  ):
    """Runs the layer; ``dropout`` and ``recurrent_dropout`` override the attributes for this call."""
    hidden = self.features
    params = {
        "kernel": self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], 4 * hidden), jnp.float32),
        "recurrent_kernel": self.param(
            "recurrent_kernel", self.recurrent_kernel_init, (hidden, 4 * hidden), jnp.float32
        ),
        "bias": self.param("bias", self.bias_init, (4 * hidden,), jnp.float32),
    }
    dropout = self.dropout if dropout is None else dropout
    recurrent_dropout = self.recurrent_dropout if recurrent_dropout is None else recurrent_dropout
    zoneout = (self.zoneout_cell, self.zoneout_hidden)
    deterministic, key = self.resolve(deterministic, rng, dropout, recurrent_dropout, *zoneout)
    rates = (0.0, 0.0) if deterministic else (dropout, recurrent_dropout)
    return lstm(
        params, inputs, key=key, dropout=rates[0], recurrent_dropout=rates[1],
        return_sequences=self.return_sequences, unroll=self.unroll, mask_bits=self.mask_bits,
        gate_masks=self.gate_masks, zoneout_cell=zoneout[0], zoneout_hidden=zoneout[1],
    )
