"""The Keras-style LSTM with input and recurrent dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from tests._asserts import assert_close_ulp

B, T, F, H = 3, 7, 5, 6


def inputs(seed=0, shape=(B, T, F)):
  return jax.random.normal(jax.random.key(seed), shape)


def reference(params, x, input_scale, recurrent_scale):
  """Step-by-step NumPy LSTM with the given fixed multipliers (Keras gate order i, f, c, o).

  A scale of shape ``(4, batch, n)`` has one multiplier per gate (Keras' ``implementation=1``: the kernel's
  gate block g sees ``x * scale[g]``), one of shape ``(batch, n)`` serves all gates.
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  per_gate = lambda scale: np.broadcast_to(scale, (4, *np.shape(scale)[-2:]))
  input_scale, recurrent_scale = per_gate(input_scale), per_gate(recurrent_scale)
  x = np.asarray(x, np.float64)
  kernels = np.split(p["kernel"], 4, axis=-1)
  recurrent_kernels = np.split(p["recurrent_kernel"], 4, axis=-1)
  sig = lambda z: 1 / (1 + np.exp(-z))
  h = np.zeros((x.shape[0], p["recurrent_kernel"].shape[0]))
  c = np.zeros_like(h)
  out = []
  for t in range(x.shape[1]):
    z = np.concatenate([(x[:, t] * input_scale[g]) @ kernels[g] + (h * recurrent_scale[g]) @ recurrent_kernels[g]
                        for g in range(4)], axis=-1) + p["bias"]
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(c)
    out.append(h)
  return np.stack(out, axis=1)


def test_matches_reference_without_dropout():
  params = jaxdrop.init_lstm_params(jax.random.key(1), F, H)
  x = inputs()
  ones_f, ones_h = np.ones((B, F)), np.ones((B, H))
  seq = jaxdrop.lstm(params, x, return_sequences=True)
  np.testing.assert_allclose(seq, reference(params, x, ones_f, ones_h), rtol=1e-5, atol=1e-6)
  # return_sequences is static: another scan body, another program. Equal to a few ulp of the output's scale.
  assert_close_ulp(jaxdrop.lstm(params, x), seq[:, -1], ulp=4, scale="max")


@pytest.mark.parametrize("gate_masks", ["keras", "shared"])
def test_dropout_masks_are_drawn_once_and_reused_at_every_step(gate_masks):
  params = jaxdrop.init_lstm_params(jax.random.key(2), F, H)
  x = inputs(3)
  out = jaxdrop.lstm(params, x, key=jax.random.key(4), dropout=0.3, recurrent_dropout=0.4, return_sequences=True,
                     gate_masks=gate_masks)
  input_key, recurrent_key = jax.random.split(jax.random.key(4))
  gates = 4 if gate_masks == "keras" else 1
  input_scale = np.asarray(jaxdrop.dropout(input_key, jnp.ones((gates, B, 1, F)), 0.3))[:, :, 0]
  recurrent_scale = np.asarray(jaxdrop.dropout(recurrent_key, jnp.ones((gates, B, H)), 0.4))
  np.testing.assert_allclose(out, reference(params, x, input_scale, recurrent_scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("gate_masks", "recurrent_dropout", "states"), [
    ("keras", 0.5, 16), ("keras", 0.0, 2), ("shared", 0.5, 2)])
def test_keras_draws_an_independent_input_mask_per_gate_when_recurrent_dropout_is_on(
    gate_masks, recurrent_dropout, states):
  # Keras 3: one unit, one feature, 512 identical two-step sequences: with recurrent_dropout > 0 its cell
  # (implementation=1, dropout_mask_count=4) ends in 2**4 = 16 distinct states, one per pattern of the four
  # gates' input masks (a zero recurrent kernel leaves the recurrent masks nothing to change); without, in 2.
  params = {"kernel": jnp.array([[0.3, 0.7, 1.1, 1.3]]), "recurrent_kernel": jnp.zeros((1, 4)),
            "bias": jnp.array([0.1, 0.2, 0.3, 0.4])}
  x = jnp.ones((512, 2, 1))
  h = jaxdrop.lstm(params, x, key=jax.random.key(0), dropout=0.5, recurrent_dropout=recurrent_dropout,
                   gate_masks=gate_masks)
  # 512 identical rows fill whole vector lanes: within one program, identical inputs give identical values.
  values, counts = np.unique(np.asarray(h), return_counts=True)
  assert len(values) == states
  expected = 512 / states  # the patterns are equally likely: the gates' masks are independent
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


@pytest.mark.parametrize("which", ["dropout", "recurrent_dropout"])
def test_dropped_units_get_no_gradient_at_any_time_step(which):
  # With masks redrawn per step, a unit would be dropped at all 40 steps with
  # probability 0.5**39; with one mask per sequence, about half the units are.
  hidden, steps = 64, 40
  params = jaxdrop.init_lstm_params(jax.random.key(5), hidden, hidden)
  x = inputs(6, (1, steps, hidden))
  param = "kernel" if which == "dropout" else "recurrent_kernel"
  loss = lambda p: jnp.sum(jaxdrop.lstm(p, x, key=jax.random.key(7), return_sequences=True, **{which: 0.5}))
  grad = np.asarray(jax.grad(loss)(params)[param]).reshape(hidden, 4, hidden)
  zero_blocks = np.all(grad == 0, axis=2)  # (unit, gate): a unit's weights into one gate
  assert 88 <= zero_blocks.sum() <= 168  # 128 +- 5 sigma
  assert np.all(np.abs(grad[~zero_blocks]).sum(axis=-1) > 0)
  if which == "dropout":  # recurrent_dropout 0: Keras' implementation 2, one input mask for all gates
    assert np.all(zero_blocks == zero_blocks[:, :1])


def test_keras_initialization_and_errors():
  params = jaxdrop.init_lstm_params(jax.random.key(8), F, H)
  np.testing.assert_array_equal(params["bias"], np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)].astype(np.float32))
  rk = np.asarray(params["recurrent_kernel"])
  np.testing.assert_allclose(rk @ rk.T, np.eye(H), atol=1e-5)  # orthogonal rows
  with pytest.raises(ValueError, match="jax.random.key"):
    jaxdrop.lstm(params, inputs(), dropout=0.2)
  with pytest.raises(ValueError, match="kernel has shape"):
    jaxdrop.lstm(params, inputs(shape=(B, T, F + 1)))
  with pytest.raises(ValueError, match="recurrent_dropout"):
    jaxdrop.lstm(params, inputs(), key=jax.random.key(9), recurrent_dropout=1.5)
  with pytest.raises(ValueError, match="time, features"):
    jaxdrop.lstm(params, jnp.ones(F))
  with pytest.raises(ValueError, match="gate_masks must be 'keras' or 'shared'"):
    jaxdrop.lstm(params, inputs(), gate_masks="tied")


def test_unbatched_and_extra_batch_axes_and_unroll():
  params = jaxdrop.init_lstm_params(jax.random.key(10), F, H)
  x = inputs(11, (2, B, T, F))
  out = jaxdrop.lstm(params, x, return_sequences=True, unroll=T)
  assert out.shape == (2, B, T, H)
  # Other shapes, unroll and return_sequences: other programs. An elementwise rtol is fragile where the gates
  # cancel (small outputs), so a few ulp of the output's scale.
  assert_close_ulp(jaxdrop.lstm(params, x[0, 1]), out[0, 1, -1], ulp=8, scale="max")


def test_the_key_hint_names_the_key_keyword():
  params = jaxdrop.init_lstm_params(jax.random.key(12), F, H)
  for rates in ({"dropout": 0.2}, {"recurrent_dropout": 0.2}, {"dropout": 0.1, "zoneout_cell": 0.1}):
    with pytest.raises(ValueError) as info:
      jaxdrop.lstm(params, inputs(), **rates)
    message = str(info.value)
    assert "got key=None" in message and "jaxdrop.lstm(..., key=jax.random.key(0))" in message, message
    assert "jaxdrop.lstm(jax.random.key(0)" not in message  # lstm's first argument is params
    assert "pass dropout=0.0 and recurrent_dropout=0.0" in message
  with pytest.raises(TypeError, match=r"jaxdrop.lstm expects a PRNG key \(key=\)"):
    jaxdrop.lstm(params, inputs(), key="seed", zoneout_hidden=0.1)
  with pytest.raises(ValueError, match=r"jaxdrop.lstm takes one PRNG key \(key=\), got a batch"):
    jaxdrop.lstm(params, inputs(), key=jax.random.split(jax.random.key(13), 2), dropout=0.2)
