"""Zoneout (Krueger et al., 2017) in jaxdrop.lstm and the LSTM layers: exact limits, unbiased updates, fresh
masks every step, the expected update at evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_close_ulp

PARAMS = jaxdrop.init_lstm_params(jax.random.key(0), 3, 8)
X = jax.random.normal(jax.random.key(1), (16, 6, 3))


def key(seed=2):
  return jax.random.key(seed)  # a fresh key object per call (the tests check key reuse)


def run(x=X, **kwargs):
  return jaxdrop.lstm(PARAMS, x, return_sequences=True, **kwargs)


def test_rate_zero_is_the_plain_lstm_exactly():
  # Bitwise by construction: lstm drops zero Python rates before any op (is_zero), so both sides run the same
  # eager ops (the key goes unused, and a zero zoneout_cell splits no key off the dropout stream).
  np.testing.assert_array_equal(run(key=key(), zoneout_cell=0.0, zoneout_hidden=0.0), run())
  with_dropout = dict(dropout=0.3, recurrent_dropout=0.2)
  np.testing.assert_array_equal(run(key=key(), zoneout_cell=0.0, **with_dropout), run(key=key(), **with_dropout))
  np.testing.assert_array_equal(run(zoneout_cell=0.0, zoneout_hidden=0.0), run())  # evaluation


@pytest.mark.parametrize("training", [True, False])
def test_rate_one_freezes_the_state(training):
  keys = lambda: dict(key=key()) if training else {}
  np.testing.assert_array_equal(run(zoneout_cell=1.0, zoneout_hidden=1.0, **keys()), 0.0)  # the initial state, kept
  np.testing.assert_array_equal(run(zoneout_hidden=1.0, **keys()), 0.0)  # the cell moves, the output does not


def test_the_training_update_is_unbiased():
  # Step 1 from the zero state: h = m * 0 + (1 - m) * h_new, so E[h] = (1 - z) h_new, the evaluation update.
  x = jnp.broadcast_to(X[:1, :1], (40_000, 1, 3))
  z = 0.3
  train = np.asarray(run(x, key=key(), zoneout_hidden=z)[:, 0], np.float64)
  expected = np.asarray(run(x[:1], zoneout_hidden=z)[0, 0], np.float64)
  np.testing.assert_allclose(expected, (1 - z) * np.asarray(run(x[:1])[0, 0]), rtol=1e-6)
  sigma = np.abs(expected / (1 - z)) * np.sqrt(z * (1 - z) / len(train))
  assert np.all(np.abs(train.mean(0) - expected) <= 5 * sigma + 1e-7)


def test_the_cell_zoneout_rate_is_realized():
  x = jnp.broadcast_to(X[:1, :1], (20_000, 1, 3))
  z = 0.25
  h = np.asarray(run(x, key=key(), zoneout_cell=z)[:, 0])  # h = o * tanh(c): zero exactly where c kept 0
  frozen = np.mean(h == 0)
  assert abs(frozen - z) < 5 * np.sqrt(z * (1 - z) / h.size)


def test_each_step_draws_a_fresh_mask():
  h = np.asarray(run(key=key(), zoneout_hidden=0.5))
  kept = h[:, 1:] == h[:, :-1]  # (batch, steps, units): the unit kept its previous value
  assert abs(kept.mean() - 0.5) < 5 * np.sqrt(0.25 / kept.size)
  assert not np.array_equal(kept[:, 0], kept[:, 1]) and not np.array_equal(kept[:, 1], kept[:, 2])
  np.testing.assert_array_equal(run(key=key(), zoneout_hidden=0.5), h)  # bitwise the same for the same key
  assert not np.array_equal(run(key=key(3), zoneout_hidden=0.5), h)


def kept_state(h):
  """Where a unit kept its previous hidden state (the initial state is 0): exact, ``jnp.where`` copies it."""
  h = np.asarray(h)
  return h == np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)


def test_a_traced_rate_and_bad_rates():
  traced = jax.jit(lambda z: run(key=key(), zoneout_hidden=z))(jnp.float32(0.5))
  concrete = run(key=key(), zoneout_hidden=0.5)
  # The zoneout masks are the same bits for a traced and a Python rate (classic 0/1 masks, the same threshold
  # for 0.5): the same units keep their state, exactly.
  np.testing.assert_array_equal(kept_state(traced), kept_state(concrete))
  # The LSTM arithmetic is one compiled program against op-by-op eager execution (XLA fuses the gates and
  # contracts multiply-adds): equal to a few ulp of the output's scale, not bitwise.
  assert_close_ulp(traced, concrete, ulp=8, scale="max")
  with pytest.raises(ValueError, match="zoneout_cell must be in"):
    run(key=key(), zoneout_cell=1.5)
  with pytest.raises(ValueError, match="zoneout_hidden must be in"):
    run(zoneout_hidden=-0.1)


def test_linen_and_nnx_layers_zone_out_while_training_and_use_the_expectation_in_evaluation():
  options = dict(zoneout_cell=0.2, zoneout_hidden=0.3, return_sequences=True)
  layer = jdl.LSTM(8, **options)
  # Bitwise by construction: the layers call jaxdrop.lstm eagerly with the same static arguments and key.
  variables = layer.init(key(0), X, deterministic=True)
  params = variables["params"]
  np.testing.assert_array_equal(layer.apply(variables, X, deterministic=True),
                                jaxdrop.lstm(params, X, zoneout_cell=0.2, zoneout_hidden=0.3, return_sequences=True))
  np.testing.assert_array_equal(layer.apply(variables, X, deterministic=False, rng=key(5)),
                                jaxdrop.lstm(params, X, key=key(5), zoneout_cell=0.2, zoneout_hidden=0.3,
                                             return_sequences=True))
  cell = jdx.LSTM(3, 8, **options, rngs=nnx.Rngs(0))
  nnx_params = {"kernel": cell.kernel[...], "recurrent_kernel": cell.recurrent_kernel[...], "bias": cell.bias[...]}
  np.testing.assert_array_equal(cell(X, rngs=key(6)), jaxdrop.lstm(nnx_params, X, key=key(6), zoneout_cell=0.2,
                                                                    zoneout_hidden=0.3, return_sequences=True))
  cell.eval()
  np.testing.assert_array_equal(cell(X), jaxdrop.lstm(nnx_params, X, zoneout_cell=0.2, zoneout_hidden=0.3,
                                                      return_sequences=True))
