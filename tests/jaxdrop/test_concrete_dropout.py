"""Concrete dropout (Gal, Hron & Kendall, 2017): the relaxed mask, gradients that reach the rate, the
regularizer's exact value, deterministic evaluation, and the paper's qualitative result."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import _bits
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from jaxdrop._concrete_dropout import _relaxed


def key(seed=0):
  return jax.random.key(seed)  # a fresh key object per call (the tests check key reuse)


def test_same_key_same_output_and_the_dtype_is_kept():
  x = jax.random.normal(key(1), (64, 8))
  y = jaxdrop.concrete_dropout(key(), x, 0.3)
  np.testing.assert_array_equal(y, jaxdrop.concrete_dropout(key(), x, 0.3))
  assert not np.array_equal(y, jaxdrop.concrete_dropout(key(2), x, 0.3))
  assert jaxdrop.concrete_dropout(key(), x.astype(jnp.bfloat16), 0.3).dtype == jnp.bfloat16


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_a_cold_relaxation_is_nearly_bernoulli_and_the_mean_is_kept(rate):
  n = 100_000
  y = np.asarray(jaxdrop.concrete_dropout(key(), jnp.ones(n), rate, temperature=0.01))
  dropped = y < 0.5 / (1 - rate)
  assert abs(dropped.mean() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
  assert np.mean(np.abs(y[~dropped] - 1 / (1 - rate)) < 1e-2) > 0.95  # survivors scaled by 1 / (1 - p)
  warm = np.asarray(jaxdrop.concrete_dropout(key(), jnp.ones(n), rate))  # the paper's temperature 0.1
  assert abs(warm.mean() - 1) < 0.01


def test_a_rate_per_unit_broadcasts():
  rates = jnp.array([0.05, 0.5, 0.9])
  y = np.asarray(jaxdrop.concrete_dropout(key(), jnp.ones((50_000, 3)), rates, temperature=0.01))
  dropped = (y < 0.5 / (1 - np.asarray(rates))).mean(0)
  np.testing.assert_allclose(dropped, rates, atol=5 * math.sqrt(0.25 / 50_000))


def test_gradients_reach_the_rate_and_equal_plain_autodiff_of_the_same_noise():
  x = jax.random.normal(key(1), (256,))
  loss = lambda x, p: jnp.sum(jaxdrop.concrete_dropout(key(), x, p) ** 2)
  gx, gp = jax.grad(loss, argnums=(0, 1))(x, 0.3)
  seed = _bits.derive_seed(key())
  rx, rp = jax.grad(lambda x, p: jnp.sum(_relaxed(seed, x, p, 0.1) ** 2), argnums=(0, 1))(x, 0.3)
  np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gp, rp, rtol=1e-5)
  assert float(gp) != 0 and math.isfinite(float(gp))
  tangent = jax.jvp(lambda x: jaxdrop.concrete_dropout(key(), x, 0.3), (x,), (jnp.ones_like(x),))[1]
  np.testing.assert_allclose(tangent, jax.grad(lambda x: jnp.sum(jaxdrop.concrete_dropout(key(), x, 0.3)))(x),
                             rtol=1e-6)  # elementwise: J 1 == J^T 1


def test_the_regularizer_is_the_papers():
  kernel = jax.random.normal(key(3), (5, 2))
  p, l, n, tau = 0.2, 0.5, 40, 2.0
  expected = (l**2 / (tau * n) * float(jnp.sum(kernel**2)) / (1 - p)
              + 2 / (tau * n) * 5 * (p * math.log(p) + (1 - p) * math.log(1 - p)))
  value = jaxdrop.concrete_dropout_regularizer(kernel, p, length_scale=l, data_size=n, precision=tau)
  assert float(value) == pytest.approx(expected, rel=1e-5)
  grad = jax.grad(lambda p: jaxdrop.concrete_dropout_regularizer(kernel, p, length_scale=l, data_size=n))(0.2)
  assert math.isfinite(float(grad))


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: jaxdrop.concrete_dropout(key(), jnp.ones(3), 0.0), ValueError, "rate must be in \\(0, 1\\)"),
    (lambda: jaxdrop.concrete_dropout(key(), jnp.ones(3), 1.0), ValueError, "rate must be in \\(0, 1\\)"),
    (lambda: jaxdrop.concrete_dropout(key(), jnp.ones(3), 0.5, temperature=0.0), ValueError, "temperature"),
    (lambda: jaxdrop.concrete_dropout(None, jnp.ones(3), 0.5), ValueError, "jax.random.key"),
    (lambda: jaxdrop.concrete_dropout(key(), jnp.ones(3), jnp.full(4, 0.5)), ValueError, "does not broadcast"),
    (lambda: jaxdrop.concrete_dropout_regularizer(jnp.ones((3, 3, 2, 4)), 0.5, length_scale=1, data_size=9),
     ValueError, "input_dim is needed"),
    (lambda: jaxdrop.concrete_dropout_regularizer(jnp.ones((3, 4)), 0.5, length_scale=1, data_size=0),
     ValueError, "data_size must be"),
], ids=["rate 0", "rate 1", "temperature 0", "missing key", "rate shape", "conv kernel", "no data"])
def test_bad_inputs_name_the_argument(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_linen_layer_learns_its_rate_sows_its_regularizer_and_is_deterministic_in_evaluation():
  layer = jdl.ConcreteDropout(nn.Dense(4), length_scale=0.1, data_size=50)
  x = jax.random.normal(key(4), (8, 3))
  params = layer.init(key(5), x, deterministic=True)["params"]
  dense = nn.Dense(4).apply({"params": params["layer"]}, x)
  np.testing.assert_array_equal(layer.apply({"params": params}, x, deterministic=True), dense)
  y, state = layer.apply({"params": params}, x, deterministic=False, rng=key(6), mutable=["losses"])
  rate = jax.nn.sigmoid(params["p_logit"])
  np.testing.assert_array_equal(y, nn.Dense(4).apply({"params": params["layer"]},
                                                     jaxdrop.concrete_dropout(key(6), x, rate)))
  (sown,) = jax.tree.leaves(state["losses"])
  expected = jaxdrop.concrete_dropout_regularizer(params["layer"]["kernel"], rate, length_scale=0.1, data_size=50)
  assert float(sown) == pytest.approx(float(expected), rel=1e-6)

  def loss(p):
    out, state = layer.apply({"params": p}, x, deterministic=False, rng=key(6), mutable=["losses"])
    return jnp.mean(out**2) + sum(jax.tree.leaves(state["losses"]))

  assert float(jax.grad(loss)(params)["p_logit"]) != 0


def test_nnx_layer_has_its_rate_and_regularizer_and_is_deterministic_in_evaluation():
  rngs = nnx.Rngs(0)
  layer = jdx.ConcreteDropout(nnx.Linear(3, 4, rngs=rngs), length_scale=0.1, data_size=50, init_rate=(0.2, 0.2),
                              rngs=rngs)
  x = jax.random.normal(key(4), (8, 3))
  assert float(layer.rate) == pytest.approx(0.2, rel=1e-6)
  np.testing.assert_array_equal(layer(x, rngs=key(7)), layer.layer(jaxdrop.concrete_dropout(key(7), x, layer.rate)))
  expected = jaxdrop.concrete_dropout_regularizer(layer.layer.kernel[...], 0.2, length_scale=0.1, data_size=50)
  assert float(layer.regularizer()) == pytest.approx(float(expected), rel=1e-5)
  grads = nnx.grad(lambda m: jnp.mean(m(x, rngs=key(8)) ** 2) + m.regularizer())(layer)
  assert float(grads.p_logit[...]) != 0
  layer.eval()
  np.testing.assert_array_equal(layer(x), layer(x))
  np.testing.assert_array_equal(layer(x), layer.layer(x))


class _Regression(nn.Module):
  data_size: int

  @nn.compact
  def __call__(self, x, train):
    kw = dict(length_scale=1e-2, data_size=self.data_size)
    x = nn.relu(jdl.ConcreteDropout(nn.Dense(32), **kw)(x, deterministic=not train))
    x = nn.relu(jdl.ConcreteDropout(nn.Dense(32), **kw)(x, deterministic=not train))
    return jdl.ConcreteDropout(nn.Dense(1), **kw)(x, deterministic=not train)


def learned_rates(n: int, steps: int = 1500) -> np.ndarray:
  """The rates learned on ``y = 2x + 8 + N(0, 1)`` from ``n`` examples (full-batch Adam)."""
  kx, ke = jax.random.split(key(10))
  x = jax.random.normal(kx, (n, 1))
  y = 2 * x + 8 + jax.random.normal(ke, (n, 1))
  net = _Regression(n)
  params = net.init(key(11), x, False)["params"]
  tx = optax.adam(1e-2)

  def loss(p, k):
    out, state = net.apply({"params": p}, x, True, rngs={"dropout": k}, mutable=["losses"])
    return jnp.mean((out - y) ** 2) / 2 + sum(jax.tree.leaves(state["losses"]))

  def step(carry, i):
    p, opt = carry
    updates, opt = tx.update(jax.grad(loss)(p, jax.random.fold_in(key(12), i)), opt, p)
    return (optax.apply_updates(p, updates), opt), None

  trained = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(steps))[0][0])(params)
  leaves = jax.tree_util.tree_leaves_with_path(trained)
  return np.array([float(jax.nn.sigmoid(v)) for path, v in leaves if "p_logit" in jax.tree_util.keystr(path)])


def test_the_learned_rate_falls_as_the_training_set_grows():
  """The paper's qualitative result: more data, less dropout (fixed keys: the same numbers every run)."""
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int32 count with floats
    small, medium, large = (learned_rates(n) for n in (10, 100, 1000))
  assert small.mean() > medium.mean() > large.mean()
  assert small.mean() > 5 * large.mean() and large.max() < 0.05
