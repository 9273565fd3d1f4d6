"""jaxdrop.gaussian_noise and the GaussianNoise layers (Keras' GaussianNoise): exact, statistical and error
properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx

N = 200_000


def test_zero_stddev_is_the_identity_and_needs_no_key():
  x = jnp.arange(6.0)
  assert jaxdrop.gaussian_noise(None, x, 0.0) is x
  assert jaxdrop.gaussian_noise(None, x, np.float32(0)) is x


@pytest.mark.parametrize("stddev", [0.1, 1.0, 3.0])
def test_noise_has_zero_mean_and_the_given_stddev(stddev):
  noise = np.asarray(jaxdrop.gaussian_noise(jax.random.key(1), jnp.zeros(N), stddev), np.float64)
  assert abs(noise.mean()) < 5 * stddev / np.sqrt(N)
  assert abs(noise.std() - stddev) < 5 * stddev / np.sqrt(2 * N)  # sd of the sample sd: sigma / sqrt(2n)
  assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 5 / np.sqrt(N)  # neighbours independent


def key(seed=7):
  return jax.random.key(seed)  # a fresh key object per call: the tests run with jax_debug_key_reuse


def test_the_noise_is_added_and_depends_on_the_key_only():
  x = jax.random.normal(jax.random.key(0), (64, 32))
  noise = jaxdrop.gaussian_noise(key(), jnp.zeros_like(x), 0.5)
  np.testing.assert_allclose(jaxdrop.gaussian_noise(key(), x, 0.5), x + noise, rtol=0, atol=1e-6)
  # The same key twice: the same program.
  np.testing.assert_array_equal(jaxdrop.gaussian_noise(key(), x, 0.5), jaxdrop.gaussian_noise(key(), x, 0.5))
  assert not np.array_equal(jaxdrop.gaussian_noise(key(8), x, 0.5), jaxdrop.gaussian_noise(key(), x, 0.5))


def test_gradient_with_respect_to_x_is_exactly_one():
  x = jax.random.normal(jax.random.key(0), (8, 5))
  grad = jax.grad(lambda x: jnp.sum(jaxdrop.gaussian_noise(jax.random.key(2), x, 0.7)))(x)
  np.testing.assert_array_equal(grad, jnp.ones_like(x))  # exact: the cotangent 1 passes through x + noise


def test_broadcast_dims_share_one_noise_value_and_dtype_is_kept():
  y = jaxdrop.gaussian_noise(jax.random.key(3), jnp.zeros((4, 6, 3)), 1.0, broadcast_dims=(1,))
  np.testing.assert_array_equal(y, jnp.broadcast_to(y[:, :1], y.shape))  # exact: one draw per row, 0 + it
  assert len(np.unique(np.asarray(y))) == 12
  half = jaxdrop.gaussian_noise(jax.random.key(3), jnp.ones((4, 6), jnp.bfloat16), 0.1)
  assert half.dtype == jnp.bfloat16


def test_a_traced_stddev_sweeps_under_vmap_and_an_invalid_one_gives_nan():
  stds = jnp.array([0.0, 0.5, 2.0])
  ys = jax.vmap(lambda s: jaxdrop.gaussian_noise(jax.random.key(4), jnp.zeros(50_000), s))(stds)
  np.testing.assert_array_equal(ys[0], 0.0)  # exact: 0 + 0 * eps
  np.testing.assert_allclose(ys[2], 4 * ys[1], rtol=1e-6)  # the same eps, scaled
  bad = jax.jit(lambda s: jaxdrop.gaussian_noise(jax.random.key(4), jnp.zeros(3), s))(jnp.float32(-1.0))
  assert bool(jnp.all(jnp.isnan(bad)))


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: jaxdrop.gaussian_noise(jax.random.key(0), jnp.ones(3), -0.1), ValueError, "stddev must be a finite"),
    (lambda: jaxdrop.gaussian_noise(jax.random.key(0), jnp.ones(3), float("nan")), ValueError, "stddev"),
    (lambda: jaxdrop.gaussian_noise(jax.random.key(0), jnp.ones(3), True), TypeError, "stddev must be a real"),
    (lambda: jaxdrop.gaussian_noise(jax.random.key(0), jnp.ones(3, jnp.int32), 0.1), TypeError, "floating"),
    (lambda: jaxdrop.gaussian_noise(None, jnp.ones(3), 0.1), ValueError, "jax.random.key"),
    (lambda: jdx.GaussianNoise(-1.0), ValueError, "stddev must be a finite"),
], ids=["negative", "nan", "bool", "integer input", "missing key", "nnx negative"])
def test_bad_inputs_name_the_argument(call, error, message):
  with pytest.raises(error, match=message):
    call()


def test_linen_layer_is_the_function_while_training_and_the_identity_in_evaluation():
  x = jax.random.normal(jax.random.key(0), (3, 4))
  layer = jdl.GaussianNoise(0.3)
  # Bitwise by construction: the layers call jaxdrop.gaussian_noise eagerly with the same key and stddev.
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=False, rng=key(5)),
                                jaxdrop.gaussian_noise(key(5), x, 0.3))
  assert layer.apply({}, x, deterministic=True) is x
  overridden = layer.apply({}, x, deterministic=False, rng=key(5), stddev=0.6)
  np.testing.assert_array_equal(overridden, jaxdrop.gaussian_noise(key(5), x, 0.6))
  assert jdl.GaussianNoise(0.0).apply({}, x, deterministic=False) is x  # no key needed
  with pytest.raises(Exception, match='needs a PRNG key from the "dropout"'):
    layer.apply({}, x, deterministic=False)


def test_nnx_layer_follows_train_and_eval():
  x = jax.random.normal(jax.random.key(0), (3, 4))
  layer = jdx.GaussianNoise(0.3, rngs=nnx.Rngs(dropout=0))
  np.testing.assert_array_equal(layer(x, rngs=key(6)), jaxdrop.gaussian_noise(key(6), x, 0.3))  # as in linen
  assert not np.array_equal(layer(x), layer(x))  # the stream advances
  layer.eval()
  assert layer(x) is x
