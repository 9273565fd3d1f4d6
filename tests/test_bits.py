"""The packed mask generator: layout, thresholds, and backend/batching invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdrop import _bits


def seed(i=0):
  return _bits.derive_seed(jax.random.key(i))


def words(s, count):
  return np.asarray(
      jax.random.bits(jax.random.wrap_key_data(s, impl=_bits.GENERATOR), (count,), jnp.uint32)
  )


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("size", [1, 7, 64, 1001])
def test_element_i_uses_lane_i_div_m_of_word_i_mod_m(bits, size):
  s = seed(1)
  threshold = 2**bits // 3
  mask = np.asarray(_bits.bernoulli_lanes(s, (size,), threshold, bits))
  k = 32 // bits
  m = -(-size // k)
  w = words(s, m)
  i = np.arange(size)
  lanes = (w[i % m] >> (bits * (i // m)).astype(np.uint32)) & np.uint32(2**bits - 1 if bits < 32 else 0xFFFFFFFF)
  np.testing.assert_array_equal(mask, lanes < threshold)


def test_mask_depends_only_on_flat_position():
  s = seed(2)
  flat = _bits.bernoulli_lanes(s, (60,), 30000, 16)
  shaped = _bits.bernoulli_lanes(s, (3, 4, 5), 30000, 16)
  np.testing.assert_array_equal(np.asarray(flat).reshape(3, 4, 5), shaped)


def test_cpu_materialized_words_equal_plain_words_also_under_vmap():
  seeds = jax.vmap(_bits.derive_seed)(jax.random.split(jax.random.key(3), 5))
  plain = jax.vmap(lambda s: _bits._philox_words(s, 999))(seeds)
  materialized = jax.jit(jax.vmap(lambda s: _bits._materialized_words(s, 999)))(seeds)
  np.testing.assert_array_equal(plain, materialized)
  nested = jax.vmap(jax.vmap(lambda s: _bits._materialized_words(s, 10)))(seeds.reshape(5, 1, 2))
  np.testing.assert_array_equal(nested[:, 0], plain[:, :10])
  np.testing.assert_array_equal(_bits._materialized_words(seeds[0], 999), plain[0])


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_fused_and_materialized_masks_are_bitwise_equal(bits):
  # The forward pass materializes the words on CPU, the custom_vjp passes hash
  # them inside their fusions: both must give the same mask.
  seeds = jax.vmap(_bits.derive_seed)(jax.random.split(jax.random.key(9), 3))
  threshold = 2**bits // 5 if bits < 32 else 2**32 // 5

  def mask(s, materialize):
    return _bits.bernoulli_lanes(s, (37, 129), threshold, bits, materialize=materialize)

  fused = jax.jit(jax.vmap(lambda s: mask(s, False)))(seeds)
  np.testing.assert_array_equal(fused, jax.jit(jax.vmap(lambda s: mask(s, True)))(seeds))
  np.testing.assert_array_equal(fused[1], mask(seeds[1], True))


def test_seed_is_zero_word_safe():
  # The conditional's predicate tests seed[0] != 0; both branches are equal.
  zero = jnp.zeros(2, jnp.uint32)
  np.testing.assert_array_equal(_bits._materialized_words(zero, 16), _bits._philox_words(zero, 16))


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_thresholds_at_the_edges(bits):
  s = seed(4)
  top = _bits.lane_threshold(1.0, bits)
  assert top == (2**bits if bits < 32 else 2**32 - 1)  # 32-bit lanes miss only 0xFFFFFFFF
  assert bool(jnp.all(_bits.bernoulli_lanes(s, (4096,), top, bits)))
  assert not bool(jnp.any(_bits.bernoulli_lanes(s, (4096,), _bits.lane_threshold(0.0, bits), bits)))
  traced = jax.jit(lambda p: _bits.lane_threshold(p, bits))
  for p in [0.0, 0.3, 0.5, 1.0]:
    exact = min(_bits.lane_threshold(p, bits), 2**32 - 256)
    if bits < 32:
      assert int(traced(jnp.float32(p))) == exact
    else:  # a traced float32 probability carries 24 significant bits
      assert abs(int(traced(jnp.float32(p))) - exact) <= 2**32 * 2.0**-24


def test_realized_probability():
  assert _bits.realized_probability(_bits.lane_threshold(0.7, 8), 8) == 179 / 256
  assert float(_bits.realized_probability(jnp.uint32(179), 8)) == 179 / 256


def test_empty_shape():
  assert _bits.bernoulli_lanes(seed(5), (0, 3), 5, 16).shape == (0, 3)
