"""A Keras-style LSTM layer with input and recurrent dropout, as a pure function.

Keras' ``LSTM(units, dropout=d, recurrent_dropout=r)`` draws its masks once per
sequence and reuses them at every time step (Gal & Ghahramani's "variational"
RNN dropout), on the inputs ``x_t`` and on the previous hidden state
``h_{t-1}`` that feeds the recurrent kernel. The cell state is never dropped.
With ``recurrent_dropout > 0`` Keras 3 switches its cell to ``implementation=1``
and draws four independent input masks and four independent recurrent masks,
one for each gate (``dropout_mask_count = 4``); with ``recurrent_dropout == 0``
one input mask serves all gates. :func:`lstm` does the same by default
(``gate_masks="keras"``); ``gate_masks="shared"`` keeps one input and one
recurrent mask for all gates (Gal & Ghahramani's tied form, cheaper: one input
projection instead of four). Gate order in the kernels is Keras': input,
forget, cell, output.

Zoneout (Krueger et al., 2017) is the other regularizer of recurrent state:
at each step and for each unit, with probability ``z`` the cell (or hidden)
state keeps its previous value instead of taking the new one; the masks are
drawn anew at every step. At evaluation the update is its expectation,
``z * previous + (1 - z) * new``.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _checks
from jaxdrop._dropout import dropout as _dropout
from jaxdrop._dropout import keep_probability

__all__ = ["init_lstm_params", "lstm", "unit_forget_bias"]

kernel_init = jax.nn.initializers.glorot_uniform()
recurrent_kernel_init = jax.nn.initializers.orthogonal()


def unit_forget_bias(key, shape, dtype=jnp.float32):
  """Bias initializer: zeros, with ones for the forget gate (Keras' ``unit_forget_bias``)."""
  del key
  (size,) = shape
  hidden = size // 4
  return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1)


def init_lstm_params(
    key: jax.Array, in_features: int, hidden: int, dtype=jnp.float32
) -> dict[str, jax.Array]:
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
    gate_masks: Literal["keras", "shared"] = "keras",
    zoneout_cell: float | jax.Array = 0.0,
    zoneout_hidden: float | jax.Array = 0.0,
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
    gate_masks: ``"keras"``: as Keras 3, an independent mask per gate for the
      inputs and for the hidden state when ``recurrent_dropout`` is not 0 (a
      traced one counts as not 0), else one input mask for all gates;
      ``"shared"``: one input mask and one recurrent mask for all gates.
    zoneout_cell: probability that a unit's cell state keeps its previous
      value at a step (zoneout); with ``key=None`` (evaluation) the cell state
      is ``z * previous + (1 - z) * new``.
    zoneout_hidden: the same for the hidden state.

  Returns:
    The hidden states. The masks are drawn once per call and are the same at
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
  if gate_masks not in ("keras", "shared"):
    raise ValueError(f"gate_masks must be 'keras' or 'shared', got gate_masks={gate_masks!r}.")
  is_zero = lambda r: isinstance(r, float) and r == 0.0
  keeps = "the probability that a unit keeps its previous {} state"
  zoneout = {
      "cell": _checks.check_rate(zoneout_cell, name="zoneout_cell", meaning=keeps.format("cell")),
      "hidden": _checks.check_rate(zoneout_hidden, name="zoneout_hidden", meaning=keeps.format("hidden")),
  }
  zoneout = {k: z for k, z in zoneout.items() if not is_zero(z)}
  batch_shape = x.shape[:-2]
  per_gate = gate_masks == "keras" and not is_zero(recurrent_dropout)
  gates = 4 if per_gate else 1
  input_scale = recurrent_scale = None  # (gates, ..., 1, features) and (gates, ..., hidden)
  zone_key = None
  if zoneout and key is not None:  # training with zoneout: its own stream (the dropout masks use the other)
    key, zone_key = jax.random.split(_checks.check_key(key, fn="jaxdrop.lstm", argument="key"))
  if not (is_zero(dropout) and is_zero(recurrent_dropout)):
    key = _checks.check_key(key, fn="jaxdrop.lstm", argument="key",
                            evaluation="For evaluation, pass dropout=0.0 and recurrent_dropout=0.0.")
    input_key, recurrent_key = jax.random.split(key)
    if not is_zero(dropout):
      ones = jnp.ones((gates, *batch_shape, 1, x.shape[-1]), x.dtype)
      input_scale = _dropout(input_key, ones, dropout, mask_bits=mask_bits)
    if not is_zero(recurrent_dropout):
      ones = jnp.ones((gates, *batch_shape, hidden), x.dtype)
      recurrent_scale = _dropout(recurrent_key, ones, recurrent_dropout, mask_bits=mask_bits)

  bias = jnp.broadcast_to(bias, (*x.shape[:-1], bias.shape[-1]))
  if input_scale is None:
    projected = x @ kernel + bias
  elif gates == 1:
    projected = (x * input_scale[0]) @ kernel + bias
  else:  # gate g sees the inputs through its own mask: x_g @ kernel[:, g]
    per_gate_kernel = kernel.reshape(kernel.shape[0], 4, hidden)
    projected = jnp.einsum("g...f,fgh->...gh", x[None] * input_scale, per_gate_kernel)
    projected = projected.reshape(bias.shape) + bias
  projected = jnp.moveaxis(projected, -2, 0)  # (time, ..., 4 * hidden)
  per_gate_recurrent = recurrent_kernel.reshape(hidden, 4, hidden)

  def recurrent_input(h):
    if recurrent_scale is None:
      return h @ recurrent_kernel
    if gates == 1:
      return (h * recurrent_scale[0]) @ recurrent_kernel
    per_gate_input = jnp.einsum("g...h,hgk->...gk", h[None] * recurrent_scale, per_gate_recurrent)
    return per_gate_input.reshape(*h.shape[:-1], 4 * hidden)

  zone = _zoneout_masks(zone_key, zoneout, (projected.shape[0], *batch_shape, hidden), x.dtype, mask_bits)
  per_step = {k: v for k, v in zone.items() if v.ndim}  # training: a mask per step, scanned over
  fixed = {k: v for k, v in zone.items() if not v.ndim}  # evaluation: the keep probability

  def step(carry, inputs):
    z_t, step_masks = inputs
    keep = {**fixed, **step_masks}
    h_prev, c_prev = carry
    z = z_t + recurrent_input(h_prev)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(g)
    if "cell" in keep:
      c = _zone(keep["cell"], c_prev, c)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if "hidden" in keep:
      h = _zone(keep["hidden"], h_prev, h)
    return (h, c), h if return_sequences else None

  zeros = jnp.zeros((*batch_shape, hidden), projected.dtype)
  (h, _), hs = lax.scan(step, (zeros, zeros), (projected, per_step), unroll=unroll)
  return jnp.moveaxis(hs, 0, -2) if return_sequences else h


def _zoneout_masks(key, zoneout: dict[str, Any], shape, dtype, mask_bits: int) -> dict[str, Any]:
  """Per step and unit, 1 where the state keeps its previous value (``{"cell": (time, ..., hidden), ...}``);
  with ``key=None`` the keep probability itself, a scalar (evaluation: the expected update)."""
  if key is None:
    return {name: jnp.asarray(keep_probability(1 - z, mask_bits=mask_bits), dtype)
            for name, z in zoneout.items()}
  ones = jnp.ones(shape, dtype)
  keys = dict(zip(("cell", "hidden"), jax.random.split(key), strict=True))
  return {name: _dropout(keys[name], ones, 1 - z, mode="classic", mask_bits=mask_bits)
          for name, z in zoneout.items()}


def _zone(keep: jax.Array, previous: jax.Array, new: jax.Array) -> jax.Array:
  """Zoneout's update: a 0/1 mask selects (exactly: a frozen unit is bitwise its previous value); a scalar
  probability mixes (``keep * previous + (1 - keep) * new``)."""
  if keep.ndim == 0:
    return keep * previous + (1 - keep) * new
  return jnp.where(keep > 0, previous, new)
