"""DropConnect, drop-path, alpha, Gaussian dropout and DropBlock."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import jaxdrop
from jaxdrop._alpha_dropout import SELU_SATURATION
from jaxdrop._drop_block import drop_block_seed_probability
from tests._asserts import assert_close_ulp, assert_same_mask, assert_trees_equal

SIGMAS = 5.0


def key(seed=0):
  return jax.random.key(seed)


# --- DropConnect -------------------------------------------------------------------


def test_drop_connect_is_dropout_on_the_weights():
  w = jax.random.normal(key(1), (64, 32))
  assert_trees_equal(jaxdrop.drop_connect(key(2), w, 0.3), jaxdrop.dropout(key(2), w, 0.3))
  x = jnp.ones((5, 64))
  y = x @ jaxdrop.drop_connect(key(3), w, 0.5)
  assert y.shape == (5, 32)
  # One mask for the whole batch: rows 0 and 4 drop the same weights (exactly), and their values are the same
  # sums (a batched matmul may order them per row otherwise: a few ulp).
  assert_same_mask(jaxdrop.drop_connect(key(3), w, 0.5), jaxdrop.dropout(key(3), w, 0.5))
  assert_close_ulp(y[0], y[4], ulp=4, scale="max")


def test_drop_connect_errors_name_the_function():
  with pytest.raises(ValueError, match="drop_connect"):
    jaxdrop.drop_connect(None, jnp.ones((2, 2)), 0.5)


# --- drop-path ---------------------------------------------------------------------


@pytest.mark.parametrize("batch_axis", [0, 1, -1])
def test_drop_path_drops_whole_examples(batch_axis):
  n, rate = 20000, 0.3
  x = jnp.moveaxis(jnp.ones((n, 4, 4)), 0, batch_axis)
  y = np.moveaxis(np.asarray(jaxdrop.drop_path(key(4), x, rate, batch_axis=batch_axis)), batch_axis, 0)
  per_example = y.reshape(n, -1)
  assert np.all(per_example == per_example[:, :1])
  assert set(np.unique(per_example)) == {0.0, np.float32(1 / 0.7)}
  sigma = math.sqrt(rate * (1 - rate) / n)
  assert abs(np.mean(per_example[:, 0] == 0) - rate) < SIGMAS * sigma + 2.0**-16


def test_drop_path_needs_a_batch_axis():
  with pytest.raises(ValueError, match="batch_axis"):
    jaxdrop.drop_path(key(5), jnp.ones((2, 3)), 0.5, batch_axis=2)
  with pytest.raises(ValueError, match="batch axis"):
    jaxdrop.drop_path(key(6), jnp.float32(1.0), 0.5)


# --- alpha dropout -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_zero_mean_unit_variance(rate):
  n = 1 << 20
  x = jax.random.normal(key(7), (n,))
  y = np.asarray(jaxdrop.alpha_dropout(key(8), x, rate), np.float64)
  # Standard errors of the sample mean and variance of y (fourth moment estimated).
  se_mean = y.std() / math.sqrt(n)
  se_var = math.sqrt((np.mean((y - y.mean()) ** 4) - y.var() ** 2) / n)
  assert abs(y.mean()) < SIGMAS * se_mean + 1e-4
  assert abs(y.var() - 1.0) < SIGMAS * se_var + 1e-4


def test_alpha_dropout_dropped_units_take_the_saturation_value_and_zero_gradient():
  rate = 0.3
  keep = 1 - rate
  # The library's float64 formula, written as it writes it (1 - keep, not rate: 1 - (1 - 0.3) != 0.3), so the
  # float32 constants below are equal by construction.
  a = (keep + SELU_SATURATION**2 * keep * (1 - keep)) ** -0.5
  b = -a * SELU_SATURATION * (1 - keep)
  x = jax.random.normal(key(9), (4096,))
  y = np.asarray(jaxdrop.alpha_dropout(key(10), x, rate))
  g = np.asarray(jax.grad(lambda v: jnp.sum(jaxdrop.alpha_dropout(key(10), v, rate)))(x))
  kept = g != 0
  np.testing.assert_array_equal(g[kept], np.float32(a))
  np.testing.assert_array_equal(y[~kept], np.float32(a * SELU_SATURATION + b))
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] * np.float32(a) + np.float32(b), rtol=1e-6)
  assert 0.25 < np.mean(~kept) < 0.35


def test_alpha_dropout_rate_edges():
  x = jnp.arange(4.0)
  assert jaxdrop.alpha_dropout(None, x, 0.0) is x
  np.testing.assert_array_equal(jaxdrop.alpha_dropout(None, x, 1.0), np.zeros(4, np.float32))
  traced = jax.jit(lambda r: jaxdrop.alpha_dropout(key(11), x, r))(jnp.float32(1.0))
  np.testing.assert_array_equal(traced, np.zeros(4, np.float32))


# --- Gaussian dropout --------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_gaussian_dropout_moments(rate):
  n = 1 << 20
  y = np.asarray(jaxdrop.gaussian_dropout(key(12), jnp.ones(n), rate), np.float64)
  var = rate / (1 - rate)
  assert abs(y.mean() - 1) < SIGMAS * math.sqrt(var / n)
  assert abs(y.var() - var) < SIGMAS * var * math.sqrt(2 / n)


def test_gaussian_dropout_rejects_rate_one_and_shares_noise():
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    jaxdrop.gaussian_dropout(key(13), jnp.ones(3), 1.0)
  y = np.asarray(jaxdrop.gaussian_dropout(key(14), jnp.ones((4, 6)), 0.5, broadcast_dims=(0,)))
  assert np.all(y == y[:1])
  x = jnp.ones(3)
  assert jaxdrop.gaussian_dropout(None, x, 0.0) is x


def test_gaussian_dropout_traced_invalid_rate_is_nan():
  y = jax.jit(lambda r: jaxdrop.gaussian_dropout(key(15), jnp.ones(4), r))(jnp.float32(1.0))
  assert np.all(np.isnan(y))


# --- DropBlock ---------------------------------------------------------------------


def coverage(size, b):
  """How many valid block centres cover each position along one axis."""
  r = np.arange(size)
  return np.minimum(r, size - b) - np.maximum(r - b + 1, 0) + 1


@pytest.mark.parametrize(("hw", "b", "rate"), [(16, 3, 0.1), (12, 5, 0.2), (8, 1, 0.3)])
def test_drop_block_dropped_fraction_matches_its_exact_expectation(hw, b, rate):
  n, c = 64, 32
  y = np.asarray(jaxdrop.drop_block(key(16), jnp.ones((n, hw, hw, c)), rate, block_size=b))
  dropped = y == 0
  gamma = drop_block_seed_probability(rate, hw, hw, b)
  gamma = round(gamma * 2**16) / 2**16  # the 16-bit realized probability
  cover = np.outer(coverage(hw, b), coverage(hw, b))
  expected = np.mean(1 - (1 - gamma) ** cover)
  per_map = dropped.mean(axis=(1, 2)).ravel()  # maps are independent
  assert abs(per_map.mean() - expected) < SIGMAS * per_map.std() / math.sqrt(per_map.size)
  assert expected <= rate + 2.0**-16  # overlaps only lower it (b = 1: no overlaps)


def test_drop_block_drops_whole_squares_and_renormalizes():
  b = 4
  y = np.asarray(jaxdrop.drop_block(key(17), jnp.ones((8, 20, 20, 3)), 0.25, block_size=b))
  for i in range(8):
    for ch in range(3):
      dropped = y[i, :, :, ch] == 0
      # Morphological opening with a b x b square returns a union of b x b squares unchanged.
      centres = sliding_window_view(dropped, (b, b)).all(axis=(2, 3))
      opened = np.zeros_like(dropped)
      for r, c in zip(*np.nonzero(centres)):
        opened[r : r + b, c : c + b] = True
      np.testing.assert_array_equal(opened, dropped)
  kept = y != 0
  np.testing.assert_allclose(y.sum(), y.size, rtol=1e-5)  # mean activation preserved
  assert np.all(y[kept] == y[kept][0])


def test_drop_block_shared_mask_and_errors():
  y = np.asarray(jaxdrop.drop_block(key(18), jnp.ones((4, 10, 10, 5)), 0.2, block_size=3, broadcast_dims=(0, 3)))
  assert np.all(y == y[:1, :, :, :1])
  with pytest.raises(ValueError, match="NHWC"):
    jaxdrop.drop_block(key(19), jnp.ones((10, 10, 5)), 0.2)
  with pytest.raises(ValueError, match="block_size"):
    jaxdrop.drop_block(key(20), jnp.ones((1, 10, 10, 5)), 0.2, block_size=0)
  with pytest.raises(ValueError, match="batch"):
    jaxdrop.drop_block(key(21), jnp.ones((1, 10, 10, 5)), 0.2, broadcast_dims=(1,))
  x = jnp.ones((1, 4, 4, 1))
  assert jaxdrop.drop_block(None, x, 0.0) is x
  np.testing.assert_array_equal(jaxdrop.drop_block(None, x, 1.0), np.zeros((1, 4, 4, 1), np.float32))


def test_drop_block_gradient_is_the_kept_scale():
  x = jax.random.normal(key(22), (2, 8, 8, 4))
  y = np.asarray(jaxdrop.drop_block(key(23), x, 0.2, block_size=3))
  g = np.asarray(jax.grad(lambda v: jnp.sum(jaxdrop.drop_block(key(23), v, 0.2, block_size=3)))(x))
  kept = y != 0
  np.testing.assert_array_equal(g[~kept], 0)
  np.testing.assert_allclose(g[kept], y.size / kept.sum(), rtol=1e-6)


def test_drop_block_with_noise_fills_the_blocks_with_standard_normal_noise():
  """timm's ``drop_block_2d(..., with_noise=True)``: ``x * mask + randn * (1 - mask)``, no renormalization."""
  x = jnp.full((8, 16, 16, 4), 3.0)
  y = np.asarray(jaxdrop.drop_block(key(24), x, 0.3, block_size=3, with_noise=True))
  zeroed = np.asarray(jaxdrop.drop_block(key(24), x, 0.3, block_size=3))
  dropped = zeroed == 0  # the same blocks as without noise: the mask is drawn alike
  assert 0.1 < dropped.mean() < 0.5
  np.testing.assert_array_equal(y[~dropped], 3.0)  # kept units unscaled
  noise = y[dropped]
  bound = SIGMAS / math.sqrt(noise.size)
  assert abs(noise.mean()) < bound and abs(noise.std() - 1) < SIGMAS * math.sqrt(0.5 / noise.size)
  assert len(np.unique(noise)) > 0.99 * noise.size  # a draw per unit, not one per block
  g = np.asarray(jax.grad(lambda v: jnp.sum(jaxdrop.drop_block(key(24), v, 0.3, block_size=3, with_noise=True)))(x))
  np.testing.assert_array_equal(g, (~dropped).astype(np.float32))  # the noise carries no gradient
  shared = np.asarray(jaxdrop.drop_block(key(25), x, 0.3, block_size=3, with_noise=True, broadcast_dims=(0,)))
  assert (shared == shared[:1]).all()  # mask and noise shared across the batch, as timm's batchwise
  all_noise = np.asarray(jaxdrop.drop_block(key(26), x, 1.0, block_size=3, with_noise=True))
  assert not (all_noise == 3.0).any()
  with pytest.raises(TypeError, match="with_noise must be True or False"):
    jaxdrop.drop_block(key(26), x, 0.1, with_noise="yes")


def test_drop_path_without_scale_by_keep_leaves_the_survivors_as_they_are():
  """timm's ``drop_path(x, p, training=True, scale_by_keep=False)``: ``x * bernoulli(1 - p)``, unscaled."""
  x = jax.random.normal(key(27), (4000, 3))
  y = np.asarray(jaxdrop.drop_path(key(28), x, 0.3, scale_by_keep=False))
  scaled = np.asarray(jaxdrop.drop_path(key(28), x, 0.3))
  kept = (y != 0).all(axis=1)
  np.testing.assert_array_equal(y[kept], np.asarray(x)[kept])
  np.testing.assert_array_equal(kept, (scaled != 0).all(axis=1))  # the same examples survive
  assert abs(kept.mean() - 0.7) < SIGMAS * math.sqrt(0.21 / 4000)
  from jaxdrop import linen as jdl
  rngs = {"dropout": key(29)}
  unscaled = np.asarray(jdl.DropPath(0.3, scale_by_keep=False).apply({}, x, deterministic=False, rngs=rngs))
  layer_kept = (np.asarray(jdl.DropPath(0.3).apply({}, x, deterministic=False, rngs=rngs)) != 0).all(axis=1)
  np.testing.assert_array_equal(unscaled[layer_kept], np.asarray(x)[layer_kept])
  np.testing.assert_array_equal(unscaled[~layer_kept], 0)
  assert_trees_equal(jdl.DropPath(0.3, scale_by_keep=False).apply({}, x, deterministic=True), x)  # identity
  with pytest.raises(TypeError, match="scale_by_keep must be True or False"):
    jaxdrop.drop_path(key(28), x, 0.3, scale_by_keep=1)


# --- every variant under the common transformations ---------------------------------

VARIANTS = {
    "dropout": lambda k, x, r: jaxdrop.dropout(k, x, r),
    "drop_connect": lambda k, x, r: jaxdrop.drop_connect(k, x, r),
    "drop_path": lambda k, x, r: jaxdrop.drop_path(k, x, r),
    "alpha_dropout": lambda k, x, r: jaxdrop.alpha_dropout(k, x, r),
    "gaussian_dropout": lambda k, x, r: jaxdrop.gaussian_dropout(k, x, r),
    "drop_block": lambda k, x, r: jaxdrop.drop_block(k, x, r, block_size=3),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_is_deterministic_and_works_under_jit_vmap_grad(name):
  fn = VARIANTS[name]
  x = jax.random.normal(key(24), (4, 8, 8, 3))
  eager = fn(key(25), x, 0.3)
  assert_trees_equal(eager, fn(key(25), x, 0.3))
  # Across eager/jit/vmap only XLA's fusion (e.g. a fused multiply-add) may differ: the same dropped elements
  # exactly, the values within a few ulp of the output's scale (an element near zero has a meaningless own ulp).
  jitted = jax.jit(fn, static_argnums=2)(key(25), x, 0.3)
  assert_same_mask(jitted, eager)
  assert_close_ulp(jitted, eager, ulp=4, scale="max")
  batched = jax.vmap(lambda k: fn(k, x, 0.3))(jax.random.split(key(26), 2))
  alone = fn(jax.random.split(key(26), 2)[1], x, 0.3)
  assert_same_mask(batched[1], alone)
  assert_close_ulp(batched[1], alone, ulp=4, scale="max")
  g = jax.grad(lambda v: jnp.sum(fn(key(27), v, 0.3)))(x)
  assert g.shape == x.shape and np.all(np.isfinite(g))
  traced = jax.jit(lambda r: fn(key(28), x, r))(jnp.float32(0.3))
  assert traced.shape == x.shape
  assert fn(key(29), x.astype(jnp.bfloat16), 0.3).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="rate"):
    fn(key(30), x, 1.5)
  with pytest.raises(TypeError, match="floating"):
    fn(key(31), jnp.ones((2, 4, 4, 3), jnp.int32), 0.3)
