"""The packed mask generator: layout, thresholds, and backend/batching invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdrop import _bits
from jaxdrop._masked import keep_for, lane_threshold, realized_probability
from tests._asserts import assert_close_ulp


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


@pytest.fixture
def one_device(monkeypatch):
  """The masks' code path of a one-device process (the test process has 8 CPU devices)."""
  monkeypatch.setattr(_bits, "_unpartitioned", lambda: True)


def test_cpu_materialized_words_equal_plain_words_also_under_vmap():
  seeds = jax.vmap(_bits.derive_seed)(jax.random.split(jax.random.key(3), 5))
  plain = jax.vmap(lambda s: _bits.random_words(s, (999,)))(seeds)
  materialized = jax.jit(jax.vmap(lambda s: _bits._materialized_words(s, 999)))(seeds)
  np.testing.assert_array_equal(plain, materialized)
  nested = jax.vmap(jax.vmap(lambda s: _bits._materialized_words(s, 10)))(seeds.reshape(5, 1, 2))
  np.testing.assert_array_equal(nested[:, 0], plain[:, :10])
  np.testing.assert_array_equal(_bits._materialized_words(seeds[0], 999), plain[0])


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_fused_and_materialized_masks_are_bitwise_equal(bits, one_device):
  # The forward pass materializes the words on CPU, the differentiated passes
  # (the custom_jvp's primal and its tangent) hash them inside their fusions:
  # both must give the same mask.
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
  np.testing.assert_array_equal(_bits._materialized_words(zero, 16), _bits.random_words(zero, (16,)))


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_thresholds_at_the_edges(bits):
  s = seed(4)
  top = lane_threshold(1.0, bits)
  assert top == (2**bits if bits < 32 else 2**32 - 1)  # 32-bit lanes miss only 0xFFFFFFFF
  assert bool(jnp.all(_bits.bernoulli_lanes(s, (4096,), top, bits)))
  assert not bool(jnp.any(_bits.bernoulli_lanes(s, (4096,), lane_threshold(0.0, bits), bits)))
  traced = jax.jit(lambda p: lane_threshold(p, bits))
  for p in [0.0, 0.3, 0.5, 1.0]:
    exact = min(lane_threshold(p, bits), 2**32 - 256)
    if bits < 32:
      assert int(traced(jnp.float32(p))) == exact
    else:  # a traced float32 probability carries 24 significant bits
      assert abs(int(traced(jnp.float32(p))) - exact) <= 2**32 * 2.0**-24


def test_realized_probability():
  assert realized_probability(lane_threshold(0.7, 8), 8) == 179 / 256
  assert float(realized_probability(jnp.uint32(179), 8)) == 179 / 256


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_a_traced_rate_gets_the_threshold_and_keep_probability_of_the_python_rate(bits):
  traced = jax.jit(lambda r: keep_for(r, bits))
  for rate in [0.0, 0.3, 0.5, 1.0]:
    concrete, jitted = keep_for(rate, bits), traced(jnp.float32(rate))
    assert concrete.valid is True and bool(jitted.valid)
    if bits < 32 or rate in (0.0, 0.5, 1.0):  # exact in float32: (1 - rate) * 2**bits rounds the same
      assert int(jitted.threshold) == concrete.threshold
    else:  # a traced float32 probability carries 24 significant bits
      assert abs(int(jitted.threshold) - concrete.threshold) <= 2**32 * 2.0**-24
    assert float(jitted.probability) == pytest.approx(concrete.probability, abs=2.0**-24)
  top = 2**bits if bits < 32 else 2**32 - 1  # rate 0 keeps every lane (of 32 bits: all but 0xFFFFFFFF)
  assert keep_for(0.0, bits).threshold == int(traced(jnp.float32(0.0)).threshold) == top
  assert keep_for(0.3, 8).probability == 179 / 256  # 8-bit masks scale by the realized probability
  assert not bool(traced(jnp.float32(1.5)).valid) and not bool(traced(jnp.float32(jnp.nan)).valid)


def test_empty_shape():
  assert _bits.bernoulli_lanes(seed(5), (0, 3), 5, 16).shape == (0, 3)


# --- the generator: jax.random's Philox-4x32 without lax.mulhi (which Shardy cannot lower) ---------------


def same_draws(draw, s, exact=True):
  """``draw(key)`` with a key of :data:`_bits.PHILOX` and one of jax's ``philox4x32``, both from seed ``s``.

  Bits, uniforms and key data are the same bits by construction; ``exact=False`` for normals, which both
  keys turn into floats through an ``erf_inv`` that XLA may fuse otherwise in the two programs (a few ulp)."""
  ours = draw(jax.random.wrap_key_data(s, impl=_bits.PHILOX))
  theirs = draw(jax.random.wrap_key_data(s, impl=_bits.GENERATOR))
  if exact:
    np.testing.assert_array_equal(ours, theirs)
  else:
    assert_close_ulp(ours, theirs, ulp=4, scale="max")
  return theirs


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (4, 1, 33)])
def test_generator_draws_are_bitwise_jax_random_philox(shape):
  s = seed(6)
  for dtype in (jnp.uint8, jnp.uint16):
    same_draws(lambda k: jax.random.bits(k, shape, dtype), s)
  same_draws(lambda k: jax.random.uniform(k, shape), s)
  same_draws(lambda k: jax.random.normal(k, shape), s, exact=False)
  same_draws(lambda k: jax.random.key_data(jax.random.split(k, shape)), s)
  np.testing.assert_array_equal(_bits.random_words(s, shape), same_draws(lambda k: jax.random.bits(k, shape), s))


def test_generator_fold_in_seed_and_64_bit_draws_are_jax_random_philox():
  s = seed(7)
  for data in (0, 1, 2**31 + 5):
    same_draws(lambda k: jax.random.key_data(jax.random.fold_in(k, data)), s)
  np.testing.assert_array_equal(jax.random.key_data(jax.random.key(42, impl=_bits.PHILOX)),
                                jax.random.key_data(jax.random.key(42, impl=_bits.GENERATOR)))
  with jax.enable_x64(True):
    same_draws(lambda k: jax.random.bits(k, (5, 3), jnp.uint64), s)
    same_draws(lambda k: jax.random.normal(k, (9,), jnp.float64), s, exact=False)


@pytest.fixture
def retrace():
  """The generator's helpers are jitted: trace them again under a patched mode (and after it)."""
  jax.clear_caches()
  yield
  jax.clear_caches()


def test_no_mulhi_in_a_mask_that_may_be_partitioned(monkeypatch, retrace):
  monkeypatch.setattr(_bits, "_unpartitioned", lambda: False)  # as in a process with several devices
  mask = jax.make_jaxpr(lambda s: _bits.bernoulli_lanes(s, (64, 3), 30000, 16, materialize=False))(seed(8))
  words = jax.make_jaxpr(lambda s: _bits.random_words(s, (10,)))(seed(8))
  assert "mulhi" not in str(mask) and "mulhi" not in str(words)


@pytest.mark.parametrize("partitioned", [False, True])
@pytest.mark.parametrize("bits", [8, 16, 32])
def test_64_bit_element_indices_give_the_same_masks(bits, partitioned, monkeypatch, retrace):
  # Masks of more than 2**32 elements index them with uint64; force that path on a small shape.
  monkeypatch.setattr(_bits, "_unpartitioned", lambda: not partitioned)
  s = seed(10)
  expected = _bits.bernoulli_lanes(s, (5, 37), 2**bits // 3, bits, materialize=False)
  monkeypatch.setattr(_bits, "_WIDE_ABOVE", 0)
  jax.clear_caches()
  wide = jax.make_jaxpr(lambda s: _bits.bernoulli_lanes(s, (5, 37), 2**bits // 3, bits, materialize=False))(s)
  assert "u64" in str(wide)  # the 64-bit path ran
  np.testing.assert_array_equal(_bits.bernoulli_lanes(s, (5, 37), 2**bits // 3, bits, materialize=False), expected)


def test_both_forms_of_the_64_bit_product_agree(monkeypatch):
  # One device: lax.mulhi; several: a uint64 product (which Shardy can lower).
  x = jax.random.bits(jax.random.key(11), (1000,), jnp.uint32)
  x = jnp.concatenate([x, jnp.array([0, 1, 2**32 - 1, 2**31], jnp.uint32)])
  forms = []
  for one in (True, False):
    monkeypatch.setattr(_bits, "_unpartitioned", lambda one=one: one)
    forms.append(_bits._mulhilo(_bits._M0, x))
  np.testing.assert_array_equal(forms[0][1], forms[1][1])
  np.testing.assert_array_equal(forms[0][0], forms[1][0])
  expected = (np.asarray(x, np.uint64) * np.uint64(_bits._M0)) >> np.uint64(32)
  np.testing.assert_array_equal(forms[1][1], expected.astype(np.uint32))
