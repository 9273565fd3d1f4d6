"""The Keras-style LSTM with input and recurrent dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop

B, T, F, H = 3, 7, 5, 6


def inputs(seed=0, shape=(B, T, F)):
  return jax.random.normal(jax.random.key(seed), shape)


def reference(params, x, input_scale, recurrent_scale):
  """Step-by-step NumPy LSTM with the given fixed multipliers (Keras gate order i, f, c, o)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x = np.asarray(x, np.float64) * input_scale[:, None, :]
  sig = lambda z: 1 / (1 + np.exp(-z))
  h = np.zeros((x.shape[0], p["recurrent_kernel"].shape[0]))
  c = np.zeros_like(h)
  out = []
  for t in range(x.shape[1]):
    z = x[:, t] @ p["kernel"] + (h * recurrent_scale) @ p["recurrent_kernel"] + p["bias"]
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
  np.testing.assert_array_equal(jaxdrop.lstm(params, x), seq[:, -1])


def test_dropout_masks_are_drawn_once_and_reused_at_every_step():
  params = jaxdrop.init_lstm_params(jax.random.key(2), F, H)
  x = inputs(3)
  out = jaxdrop.lstm(params, x, key=jax.random.key(4), dropout=0.3, recurrent_dropout=0.4, return_sequences=True)
  input_key, recurrent_key = jax.random.split(jax.random.key(4))
  input_scale = np.asarray(jaxdrop.dropout(input_key, jnp.ones((B, 1, F)), 0.3))[:, 0]
  recurrent_scale = np.asarray(jaxdrop.dropout(recurrent_key, jnp.ones((B, H)), 0.4))
  np.testing.assert_allclose(out, reference(params, x, input_scale, recurrent_scale), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["dropout", "recurrent_dropout"])
def test_dropped_units_get_no_gradient_at_any_time_step(which):
  # With masks redrawn per step, a unit would be dropped at all 40 steps with
  # probability 0.5**39; with one mask per sequence, about half the units are.
  hidden, steps = 64, 40
  params = jaxdrop.init_lstm_params(jax.random.key(5), hidden, hidden)
  x = inputs(6, (1, steps, hidden))
  param = "kernel" if which == "dropout" else "recurrent_kernel"
  loss = lambda p: jnp.sum(jaxdrop.lstm(p, x, key=jax.random.key(7), return_sequences=True, **{which: 0.5}))
  grad = np.asarray(jax.grad(loss)(params)[param])
  zero_rows = np.all(grad == 0, axis=1)
  assert 12 <= zero_rows.sum() <= 52  # 32 +- 5 sigma
  assert np.all(np.abs(grad[~zero_rows]).sum(axis=1) > 0)


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


def test_unbatched_and_extra_batch_axes_and_unroll():
  params = jaxdrop.init_lstm_params(jax.random.key(10), F, H)
  x = inputs(11, (2, B, T, F))
  out = jaxdrop.lstm(params, x, return_sequences=True, unroll=T)
  assert out.shape == (2, B, T, H)
  np.testing.assert_allclose(jaxdrop.lstm(params, x[0, 1]), out[0, 1, -1], rtol=1e-6)
