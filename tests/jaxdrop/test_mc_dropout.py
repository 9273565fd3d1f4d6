"""Monte Carlo dropout inference."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import linen as jdl
from tests._asserts import assert_trees_equal


def test_mean_and_spread_of_dropout_passes():
  rate, samples = 0.5, 400
  x = jnp.full((2000,), 3.0)
  pred = jaxdrop.mc_dropout(lambda k, v: jaxdrop.dropout(k, v, rate), jax.random.key(0), x, num_samples=samples)
  # Each pass gives 0 or 6: mean 3, standard deviation 3 (per element, over passes).
  se = 3.0 / math.sqrt(samples)
  assert abs(float(pred.mean.mean()) - 3.0) < 5 * se / math.sqrt(2000) + 2.0**-14
  assert abs(float(pred.std.mean()) - 3.0) < 0.05
  assert pred.mean.shape == x.shape and pred.std.dtype == jnp.float32


def test_chunked_passes_equal_all_at_once_and_apply_is_traced_once():
  traces = []

  def apply(k, v):
    traces.append(1)
    return {"out": jaxdrop.dropout(k, v, 0.3), "aux": jnp.sum(v)}

  x = jnp.arange(10.0)
  full = jaxdrop.mc_dropout(apply, jax.random.key(1), x, num_samples=12)
  assert len(traces) == 1  # one vmapped trace for all passes
  chunked = jaxdrop.mc_dropout(apply, jax.random.key(1), x, num_samples=12, batch_size=5)
  # Bitwise by construction: every pass is where(mask, x * scale, 0), one multiply, and aux an exact integer
  # sum, under vmap and lax.map alike; then the same eager mean over identical (12, ...) arrays.
  assert_trees_equal(full.mean, chunked.mean)
  np.testing.assert_allclose(full.std["out"], chunked.std["out"], rtol=1e-6)
  np.testing.assert_array_equal(full.std["aux"], 0.0)  # identical passes: exactly no spread


def test_with_a_flax_model_under_jit():
  model = nn.Sequential([nn.Dense(16), nn.relu, jdl.Dropout(0.5, deterministic=False), nn.Dense(1)])
  variables = model.init({"params": jax.random.key(2), "dropout": jax.random.key(3)}, jnp.ones((4, 3)))
  apply = lambda k, v: model.apply(variables, v, rngs={"dropout": k})
  pred = jax.jit(lambda k, v: jaxdrop.mc_dropout(apply, k, v, num_samples=8))(jax.random.key(4), jnp.ones((4, 3)))
  assert pred.mean.shape == (4, 1) and np.all(np.asarray(pred.std) > 0)


def test_single_sample_has_zero_spread_and_bad_counts_raise():
  pred = jaxdrop.mc_dropout(lambda k, v: jaxdrop.dropout(k, v, 0.5), jax.random.key(5), jnp.ones(3), num_samples=1)
  np.testing.assert_array_equal(pred.std, 0.0)  # one pass: its own mean, exactly
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError, match="num_samples"):
      jaxdrop.mc_dropout(lambda k, v: v, jax.random.key(6), jnp.ones(3), num_samples=bad)
  with pytest.raises(ValueError, match="batch_size"):
    jaxdrop.mc_dropout(lambda k, v: v, jax.random.key(7), jnp.ones(3), num_samples=3, batch_size=0)
