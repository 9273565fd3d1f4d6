"""LayerDrop (Fan et al., 2019; fairseq's LayerDropModuleList): the output is the composition of the kept layers,
dropped layers get zero gradients and are skipped by a conditional, the draw is a Bernoulli of the rate, one
per layer, and evaluation runs every layer; the linen and NNX layers in nn.scan / nnx.scan."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_close_ulp

DEPTH, WIDTH = 6, 3


def layer(w, x):
  return x + jnp.tanh(x @ w)


def stack(seed=0):
  return 0.5 * jax.random.normal(jax.random.key(seed), (DEPTH, WIDTH, WIDTH))


X = jnp.linspace(-1.0, 1.0, 2 * WIDTH).reshape(2, WIDTH)


def compose(weights, kept):
  x = X
  for i in np.flatnonzero(kept):
    x = layer(weights[i], x)
  return x


def test_the_output_is_the_composition_of_the_kept_layers_and_dropped_layers_get_no_gradient():
  weights = stack()
  kept = np.asarray(jaxdrop.layer_drop_mask(jax.random.key(1), DEPTH, 0.5))
  assert 0 < kept.sum() < DEPTH  # this key drops some layers and keeps some
  out = jaxdrop.layer_drop(jax.random.key(1), layer, weights, X, 0.5)
  assert_close_ulp(out, compose(weights, kept), ulp=4, scale="max")  # a scan vs a Python loop
  grads = jax.grad(lambda w: jnp.sum(jaxdrop.layer_drop(jax.random.key(1), layer, w, X, 0.5) ** 2))(weights)
  per_layer = np.asarray(jnp.any(grads != 0, axis=(1, 2)))
  np.testing.assert_array_equal(per_layer, kept)  # exactly zero for the dropped layers
  # the scan's body is a conditional: a dropped layer's compute is skipped, not masked
  jaxpr = str(jax.make_jaxpr(lambda w: jaxdrop.layer_drop(jax.random.key(1), layer, w, X, 0.5))(weights))
  assert "cond[" in jaxpr and "scan[" in jaxpr


def test_evaluation_runs_every_layer_and_the_edge_rates():
  weights = stack()
  everything = compose(weights, np.ones(DEPTH, bool))
  assert_close_ulp(jaxdrop.layer_drop(None, layer, weights, X, 0.5, deterministic=True), everything, ulp=4,
                   scale="max")
  assert_close_ulp(jaxdrop.layer_drop(None, layer, weights, X, 0.0), everything, ulp=4, scale="max")
  assert_close_ulp(jaxdrop.layer_drop(None, layer, weights, X, 1.0), X, ulp=0)  # every layer dropped
  bad = jax.jit(lambda r: jaxdrop.layer_drop(jax.random.key(0), layer, weights, X, r))(1.5)
  assert np.all(np.isnan(bad))  # an invalid traced rate
  with pytest.raises(ValueError, match="rate"):
    jaxdrop.layer_drop(jax.random.key(0), layer, weights, X, 1.5)
  with pytest.raises(ValueError, match="stacked"):
    jaxdrop.layer_drop(jax.random.key(0), layer, {"w": weights, "b": jnp.zeros(3)}, X, 0.5)
  with pytest.raises(ValueError, match="key"):
    jaxdrop.layer_drop(None, layer, weights, X, 0.5)


def test_the_draw_is_one_bernoulli_per_layer_at_the_rate():
  # fairseq keeps a layer where its uniform draw exceeds p: each layer dropped with probability p, the layers
  # independent; over 4,000 keys x 12 layers the dropped fraction is within 4 sigma of the rate, per layer too.
  rate, n = 0.25, 4000
  masks = np.asarray(jax.vmap(lambda k: jaxdrop.layer_drop_mask(k, 12, rate))(
      jax.random.split(jax.random.key(7), n)))
  sigma = np.sqrt(rate * (1 - rate) / masks.size)
  assert abs((1 - masks.mean()) - rate) < 4 * sigma
  assert np.all(np.abs((1 - masks.mean(0)) - rate) < 4 * np.sqrt(rate * (1 - rate) / n))
  both = np.mean(~masks[:, 0] & ~masks[:, 1])  # two layers dropped together: rate ** 2
  assert abs(both - rate**2) < 4 * np.sqrt(rate**2 * (1 - rate**2) / n)


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x + jnp.tanh(nn.Dense(WIDTH, use_bias=False)(x))


class Body(nn.Module):
  rate: float = 0.5

  @nn.compact
  def __call__(self, x, _):
    return jdl.LayerDrop(Block(), rate=self.rate)(x, deterministic=False), None


def test_linen_layer_drop_in_nn_scan():
  Stack = nn.scan(Body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                  length=DEPTH)
  variables = Stack().init(jax.random.key(0), X, None)
  kernels = variables["params"]["Block_0"]["Dense_0"]["kernel"]  # (DEPTH, WIDTH, WIDTH): Body adopts Block
  assert kernels.shape == (DEPTH, WIDTH, WIDTH)

  def run(params, rate=0.5, seed=1):
    return Stack(rate=rate).apply({"params": params}, X, None, rngs={"dropout": jax.random.key(seed)})[0]

  grads = jax.grad(lambda p: jnp.sum(run(p) ** 2))(variables["params"])
  kept = np.asarray(jnp.any(grads["Block_0"]["Dense_0"]["kernel"] != 0, axis=(1, 2)))
  assert 0 < kept.sum() < DEPTH
  # the output is the composition of exactly the layers whose parameters got a gradient
  assert_close_ulp(run(variables["params"]), compose(kernels, kept), ulp=4, scale="max")
  assert_close_ulp(run(variables["params"], rate=1.0), X, ulp=0)
  evaluation = jdl.LayerDrop(Block(), rate=0.5, deterministic=True)  # evaluation runs the layer
  one = evaluation.init(jax.random.key(2), X)
  assert_close_ulp(evaluation.apply(one, X), layer(one["params"]["layer"]["Dense_0"]["kernel"], X), ulp=2,
                   scale="max")


def test_nnx_layer_drop_in_nnx_scan():
  @nnx.split_rngs(splits=DEPTH)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def make(rngs):
    return jdx.LayerDrop(NnxBlock(rngs), rate=0.5, rngs=rngs)

  layers = make(nnx.Rngs(0, dropout=3))

  @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
  def run(layer, x):
    return layer(x)

  kernels = layers.layer.linear.kernel[...]
  before = nnx.clone(layers)  # its streams as they are: the gradient's call draws the same keep bits
  grads = nnx.grad(lambda m: jnp.sum(run(m, X) ** 2))(layers)
  kept = np.asarray(jnp.any(grads.layer.linear.kernel[...] != 0, axis=(1, 2)))
  assert 0 < kept.sum() < DEPTH
  # the output is the composition of exactly the layers whose parameters got a gradient
  assert_close_ulp(run(before, X), compose(kernels, kept), ulp=4, scale="max")
  layers.eval()  # evaluation: every layer
  assert_close_ulp(run(layers, X), compose(kernels, np.ones(DEPTH, bool)), ulp=4, scale="max")


class NnxBlock(nnx.Module):
  def __init__(self, rngs):
    self.linear = nnx.Linear(WIDTH, WIDTH, use_bias=False, rngs=rngs)

  def __call__(self, x):
    return x + jnp.tanh(self.linear(x))
