"""jaxdrop.nnx layers: same numbers as the pure functions, NNX's conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_trees_equal

X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))

CASES = {
    "Dropout": (lambda r: jdx.Dropout(0.3, broadcast_dims=(1,), rngs=r), lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(1,))),
    "GaussianDropout": (lambda r: jdx.GaussianDropout(0.3, rngs=r), lambda k, x: jaxdrop.gaussian_dropout(k, x, 0.3)),
    "AlphaDropout": (lambda r: jdx.AlphaDropout(0.3, rngs=r), lambda k, x: jaxdrop.alpha_dropout(k, x, 0.3)),
    "DropPath": (lambda r: jdx.DropPath(0.3, rngs=r), lambda k, x: jaxdrop.drop_path(k, x, 0.3)),
    "DropBlock": (lambda r: jdx.DropBlock(0.3, block_size=3, rngs=r), lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3)),
    "DropPath unscaled": (lambda r: jdx.DropPath(0.3, scale_by_keep=False, rngs=r),
                          lambda k, x: jaxdrop.drop_path(k, x, 0.3, scale_by_keep=False)),
    "DropBlock with noise": (lambda r: jdx.DropBlock(0.3, block_size=3, with_noise=True, rngs=r),
                             lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3, with_noise=True)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_equals_function_for_the_same_key(name):
  make, fn = CASES[name]
  layer = make(nnx.Rngs(dropout=1))
  # Bitwise by construction: the layer calls fn eagerly with the same key and rate (evaluation: the inputs).
  assert_trees_equal(layer(X, rngs=jax.random.key(2)), fn(jax.random.key(2), X))
  first, second = layer(X), layer(X)  # the stream advances
  assert not np.array_equal(first, second)
  layer.eval()
  np.testing.assert_array_equal(layer(X), X)
  layer.train()
  assert not np.array_equal(layer(X), X)
  np.testing.assert_array_equal(nnx.view(layer, deterministic=True)(X), X)


def test_linen_and_nnx_agree_for_the_same_key():
  linen_out = jdl.Dropout(0.5).apply({}, X, deterministic=False, rng=jax.random.key(3))
  nnx_out = jdx.Dropout(0.5)(X, rngs=jax.random.key(3))
  assert_trees_equal(linen_out, nnx_out)  # by construction: both call jaxdrop.dropout eagerly, alike


def test_errors_list_the_fixes():
  with pytest.raises(ValueError, match=r"rngs=nnx.Rngs\(dropout=0\)"):
    jdx.Dropout(0.5)(X)
  with pytest.raises(ValueError, match="model.train"):
    jdx.Dropout(0.5, deterministic=None)(X)
  with pytest.raises(TypeError, match="rngs"):
    jdx.Dropout(0.5, rngs=0)
  np.testing.assert_array_equal(jdx.Dropout(0.5, deterministic=None)(X, deterministic=True), X)
  np.testing.assert_array_equal(jdx.Dropout(0.0)(X), X)  # nothing to draw, no rngs needed


def test_call_time_rngs_override_and_classic_mode():
  layer = jdx.Dropout(0.25, mode="classic", rngs=nnx.Rngs(4))
  via_rngs = layer(X, rngs=nnx.Rngs(dropout=5))
  assert via_rngs.shape == X.shape
  np.testing.assert_allclose(layer(X, deterministic=True), X * 0.75, rtol=1e-7)


def test_drop_connect_linear_and_lstm_equal_their_functions():
  x = jnp.ones((2, 3))
  dense = jdx.DropConnectLinear(3, 5, rate=0.5, rngs=nnx.Rngs(6))
  expected = x @ jaxdrop.drop_connect(jax.random.key(7), dense.kernel[...], 0.5) + dense.bias[...][None]
  np.testing.assert_allclose(dense(x, rngs=jax.random.key(7)), expected, rtol=1e-6)
  np.testing.assert_allclose(dense(x, deterministic=True), x @ dense.kernel[...] + dense.bias[...][None], rtol=1e-6)

  seq = jax.random.normal(jax.random.key(8), (2, 6, 3))
  lstm = jdx.LSTM(3, 4, dropout=0.25, recurrent_dropout=0.25, return_sequences=True, rngs=nnx.Rngs(9))
  params = {"kernel": lstm.kernel[...], "recurrent_kernel": lstm.recurrent_kernel[...], "bias": lstm.bias[...]}
  expected = jaxdrop.lstm(params, seq, key=jax.random.key(10), dropout=0.25, recurrent_dropout=0.25, return_sequences=True)
  assert_trees_equal(lstm(seq, rngs=jax.random.key(10)), expected)  # by construction: it calls jaxdrop.lstm
  lstm.eval()
  assert_trees_equal(lstm(seq), jaxdrop.lstm(params, seq, return_sequences=True))


def test_training_step_under_nnx_jit_with_jaxdrop_sgd():
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(4, 32, rngs=rngs)
      self.drop = jdx.Dropout(0.2, rngs=rngs)
      self.l2 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
      return self.l2(self.drop(nnx.relu(self.l1(x))))

  model = MLP(nnx.Rngs(params=0, dropout=1))
  optimizer = nnx.Optimizer(model, jaxdrop.sgd(0.05, momentum=0.9, weight_decay=1e-3), wrt=nnx.Param)
  x = jax.random.normal(jax.random.key(11), (64, 4))
  y = jnp.sum(x, axis=1, keepdims=True)

  @nnx.jit
  def train_step(model, optimizer):
    loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  model.eval()
  assert losses[-1] < 0.5 * losses[0]
  assert float(jnp.mean((model(x) - y) ** 2)) < losses[0]
