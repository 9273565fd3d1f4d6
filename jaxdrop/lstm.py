"""A Keras-style LSTM layer with input and recurrent dropout, as a pure function.

Keras' ``LSTM(units, dropout=d, recurrent_dropout=r)`` draws two masks once per
sequence and reuses them at every time step (Gal & Ghahramani's "variational"
RNN dropout): one on the inputs ``x_t`` and one on the previous hidden state
``h_{t-1}`` that feeds the recurrent kernel. The cell state is never dropped.
Gate order in the kernels is Keras': input, forget, cell, output.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks
from jaxdrop.dropout import dropout as _dropout

__all__ = ["init_lstm_params", "lstm", "unit_forget_bias"]

kernel_init = jax.nn.initializers.glorot_uniform()
recurrent_kernel_init = jax.nn.initializers.orthogonal()


def unit_forget_bias(key, shape, dtype=jnp.float32):
  """Bias initializer: zeros, with ones for the forget gate (Keras' ``unit_forget_bias``)."""
  del key
  (size,) = shape
  hidden = size // 4
  return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1)


def init_lstm_params(key: jax.Array, in_features: int, hidden: int, dtype=jnp.float32) -> dict[str, jax.Array]:
  """Keras' default initialization of :func:`lstm`'s parameters.

  Args:
    key: a PRNG key.
    in_features: size of each input vector.
    hidden: number of units.
    dtype: parameter dtype.

  Returns:
    ``{"kernel": (in_features, 4 * hidden), "recurrent_kernel": (hidden, 4 * hidden),
    "bias": (4 * hidden,)}`` with Glorot-uniform, orthogonal and unit-forget-bias
    initializations.

  Example:
    >>> import jax
    >>> import jaxdrop
    >>> params = jaxdrop.init_lstm_params(jax.random.key(0), 3, 8)
    >>> params["recurrent_kernel"].shape
    (8, 32)
  """
  k1, k2 = jax.random.split(key)
  return {
      "kernel": kernel_init(k1, (in_features, 4 * hidden), dtype),
      "recurrent_kernel": recurrent_kernel_init(k2, (hidden, 4 * hidden), dtype),
      "bias": unit_forget_bias(None, (4 * hidden,), dtype),
  }


def lstm(
    params: dict[str, Any],
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    dropout: float | jax.Array = 0.0,
    recurrent_dropout: float | jax.Array = 0.0,
    return_sequences: bool = False,
    unroll: int | bool = 1,
    mask_bits: int = 16,
) -> jax.Array:
  """Runs an LSTM over ``x`` of shape ``(..., time, features)``.

  Args:
    params: ``kernel``, ``recurrent_kernel`` and ``bias`` (see :func:`init_lstm_params`).
    x: inputs, batch axes first, then time, then features.
    key: a PRNG key, needed when a dropout rate is positive; pass ``None`` (or
      rates of 0) for evaluation.
    dropout: drop probability of the input units (not the keep probability).
    recurrent_dropout: drop probability of the hidden units fed back into the
      recurrence.
    return_sequences: return the hidden state at every step, ``(..., time,
      hidden)``, instead of the last one, ``(..., hidden)``.
    unroll: time steps per iteration of the underlying ``lax.scan``.
    mask_bits: mask precision, as in :func:`jaxdrop.dropout`.

  Returns:
    The hidden states. Both masks are drawn once per call and are the same at
    every time step; they are inverted-dropout masks (survivors scaled by
    ``1 / (1 - rate)``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> params = jaxdrop.init_lstm_params(jax.random.key(0), 3, 8)
    >>> x = jnp.ones((2, 5, 3))
    >>> jaxdrop.lstm(params, x, key=jax.random.key(1), dropout=0.25,
    ...              recurrent_dropout=0.25, return_sequences=True).shape
    (2, 5, 8)
  """
  x = _checks.check_floating(x)
  if x.ndim < 2:
    raise ValueError(f"lstm expects inputs of shape (..., time, features), got {x.shape}.")
  dropout = _checks.check_rate(dropout, name="dropout")
  recurrent_dropout = _checks.check_rate(recurrent_dropout, name="recurrent_dropout")
  kernel, recurrent_kernel, bias = params["kernel"], params["recurrent_kernel"], params["bias"]
  hidden = recurrent_kernel.shape[0]
  if kernel.shape != (x.shape[-1], 4 * hidden):
    raise ValueError(
        f"lstm: kernel has shape {kernel.shape}, expected {(x.shape[-1], 4 * hidden)} for"
        f" inputs with {x.shape[-1]} features and {hidden} units."
    )
  batch_shape = x.shape[:-2]
  active = [r for r in (dropout, recurrent_dropout) if not (isinstance(r, float) and r == 0.0)]
  recurrent_scale = None
  if active:
    key = _checks.check_key(key, fn="jaxdrop.lstm")
    input_key, recurrent_key = jax.random.split(key)
    x = _dropout(input_key, x, dropout, broadcast_dims=(x.ndim - 2,), mask_bits=mask_bits)
    if not (isinstance(recurrent_dropout, float) and recurrent_dropout == 0.0):
      ones = jnp.ones((*batch_shape, hidden), x.dtype)
      recurrent_scale = _dropout(recurrent_key, ones, recurrent_dropout, mask_bits=mask_bits)

  projected = x @ kernel + jnp.broadcast_to(bias, (*x.shape[:-1], bias.shape[-1]))
  projected = jnp.moveaxis(projected, -2, 0)  # (time, ..., 4 * hidden)

  def step(carry, z_t):
    h, c = carry
    h_in = h if recurrent_scale is None else h * recurrent_scale
    z = z_t + h_in @ recurrent_kernel
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h if return_sequences else None

  zeros = jnp.zeros((*batch_shape, hidden), projected.dtype)
  (h, _), hs = lax.scan(step, (zeros, zeros), projected, unroll=unroll)
  return jnp.moveaxis(hs, 0, -2) if return_sequences else h
