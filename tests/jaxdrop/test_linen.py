"""jaxdrop.linen layers: same numbers as the pure functions, flax's conventions."""

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import linen as jdl
from tests._asserts import assert_trees_equal

X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))

CASES = {
    "Dropout": (jdl.Dropout(0.3, broadcast_dims=(1,)), lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(1,))),
    "GaussianDropout": (jdl.GaussianDropout(0.3), lambda k, x: jaxdrop.gaussian_dropout(k, x, 0.3)),
    "AlphaDropout": (jdl.AlphaDropout(0.3), lambda k, x: jaxdrop.alpha_dropout(k, x, 0.3)),
    "DropPath": (jdl.DropPath(0.3), lambda k, x: jaxdrop.drop_path(k, x, 0.3)),
    "DropBlock": (jdl.DropBlock(0.3, block_size=3), lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3)),
    "DropPath unscaled": (jdl.DropPath(0.3, scale_by_keep=False),
                          lambda k, x: jaxdrop.drop_path(k, x, 0.3, scale_by_keep=False)),
    "DropBlock with noise": (jdl.DropBlock(0.3, block_size=3, with_noise=True),
                             lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3, with_noise=True)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_equals_function_for_the_same_key(name):
  layer, fn = CASES[name]
  out = layer.apply({}, X, deterministic=False, rng=jax.random.key(1))
  assert_trees_equal(out, fn(jax.random.key(1), X))  # by construction: the layer calls fn eagerly, alike
  np.testing.assert_array_equal(layer.apply({}, X, deterministic=True), X)  # evaluation returns the inputs
  via_stream = layer.apply({}, X, deterministic=False, rngs={"dropout": jax.random.key(2)})
  assert via_stream.shape == X.shape and not np.array_equal(via_stream, X)


def test_deterministic_is_merged_like_flax():
  with pytest.raises(ValueError, match="passed to the constructor and at call time"):
    jdl.Dropout(0.5, deterministic=True).apply({}, X, deterministic=True)
  with pytest.raises(ValueError, match="must be passed to the constructor or at call time"):
    jdl.Dropout(0.5).apply({}, X)
  np.testing.assert_array_equal(jdl.Dropout(0.5, deterministic=True).apply({}, X), X)


def test_missing_dropout_rng_says_how_to_pass_one():
  with pytest.raises(flax.errors.InvalidRngError, match=r'rngs=\{"dropout": jax.random.key\(0\)\}'):
    jdl.Dropout(0.5).apply({}, X, deterministic=False)
  # rate 0 needs no key; init falls back to the "params" stream as flax does
  np.testing.assert_array_equal(jdl.Dropout(0.0).apply({}, X, deterministic=False), X)
  model = nn.Sequential([nn.Dense(3), jdl.Dropout(0.5, deterministic=False)])
  assert "params" in model.init(jax.random.key(3), jnp.ones((1, 2)))


def test_classic_mode_scales_at_evaluation():
  layer = jdl.Dropout(0.25, mode="classic")
  np.testing.assert_allclose(layer.apply({}, X, deterministic=True), X * 0.75, rtol=1e-7)
  y = np.asarray(layer.apply({}, X, deterministic=False, rng=jax.random.key(4)))
  assert np.all((y == 0) | (y == np.asarray(X)))  # exact: classic survivors are multiplied by 1.0


def test_bad_rate_is_reported_even_in_evaluation():
  with pytest.raises(ValueError, match="rate"):
    jdl.AlphaDropout(1.5).apply({}, X, deterministic=True)


def test_drop_connect_dense():
  layer = jdl.DropConnectDense(5, rate=0.5)
  x = jnp.ones((2, 3))
  variables = layer.init(jax.random.key(5), x, deterministic=True)
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  np.testing.assert_allclose(layer.apply(variables, x, deterministic=True), x @ kernel + bias[None], rtol=1e-6)
  out = layer.apply(variables, x, deterministic=False, rng=jax.random.key(6))
  expected = x @ jaxdrop.drop_connect(jax.random.key(6), kernel, 0.5) + bias[None]
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert jaxdrop.resolve_mask(variables) == {"params": {"kernel": True, "bias": False}}


def test_lstm_layer_equals_function_and_stacks_like_keras():
  x = jax.random.normal(jax.random.key(7), (2, 6, 3))
  layer = jdl.LSTM(4, dropout=0.25, recurrent_dropout=0.25, return_sequences=True)
  variables = layer.init(jax.random.key(8), x, deterministic=True)
  out = layer.apply(variables, x, deterministic=False, rng=jax.random.key(9))
  expected = jaxdrop.lstm(
      variables["params"], x, key=jax.random.key(9), dropout=0.25, recurrent_dropout=0.25, return_sequences=True
  )
  assert_trees_equal(out, expected)  # by construction: the layer calls jaxdrop.lstm eagerly, alike
  np.testing.assert_array_equal(
      layer.apply(variables, x, deterministic=True), jaxdrop.lstm(variables["params"], x, return_sequences=True)
  )

  class Stacked(nn.Module):  # tutorial 002's Keras model, smaller
    @nn.compact
    def __call__(self, x, train):
      x = jdl.LSTM(16, return_sequences=True)(x, deterministic=not train)
      x = jdl.Dropout(0.4)(x, deterministic=not train)
      x = jdl.LSTM(8, dropout=0.25, recurrent_dropout=0.25, return_sequences=True)(x, deterministic=not train)
      x = jdl.Dropout(0.4)(x, deterministic=not train)
      return jdl.LSTM(4, dropout=0.25, recurrent_dropout=0.25)(x, deterministic=not train)

  model = Stacked()
  v = model.init(jax.random.key(10), x, train=False)
  y = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(11)})
  assert y.shape == (2, 4)
