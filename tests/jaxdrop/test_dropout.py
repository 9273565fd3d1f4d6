"""jaxdrop.dropout and dropout_eval: exact, statistical and error-path properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxdrop
from jaxdrop import _bits
from jaxdrop._masked import masked_affine, masked_affine_stored
from tests._asserts import assert_trees_equal

N = 1 << 20  # elements for statistical tests
SIGMAS = 5.0


def key(seed=0):
  return jax.random.key(seed)


def realized_drop(rate, bits):
  return 1.0 - round((1.0 - rate) * 2**bits) / 2**bits


# --- the source tutorial's worked example (tutorial 004, dropout_layer on arange(16)) ---------


def test_seed_worked_example_rates_0_half_1():
  x = jnp.arange(16, dtype=jnp.float32).reshape(2, 8)
  assert jaxdrop.dropout(key(), x, 0.0) is x
  np.testing.assert_array_equal(jaxdrop.dropout(key(), x, 1.0), np.zeros((2, 8), np.float32))
  y = np.asarray(jaxdrop.dropout(key(), x, 0.5))
  assert np.all((y == 0) | (y == 2 * np.asarray(x)))
  assert 0 < np.count_nonzero(y) < 15  # something kept and something dropped (x[0, 0] is 0)


# --- statistics at fixed keys ----------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_fraction_within_5_sigma(rate, bits):
  y = jaxdrop.dropout(key(1), jnp.ones(N), rate, mask_bits=bits)
  p = realized_drop(rate, bits)
  sigma = math.sqrt(p * (1 - p) / N)
  assert abs(float(jnp.mean(y == 0)) - p) < SIGMAS * sigma


def test_default_precision_within_2_pow_16_of_rate():
  for rate in np.linspace(0.0, 1.0, 1001):
    assert abs(realized_drop(float(rate), 16) - rate) <= 2.0**-17
  assert jaxdrop.keep_probability(0.3) == 1 - 0.3


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.7])
def test_mean_preserved_within_5_sigma(rate):
  y = jaxdrop.dropout(key(2), jnp.ones(N), rate)
  sigma = math.sqrt(rate / (1 - rate) / N)
  assert abs(float(jnp.mean(y)) - 1.0) < SIGMAS * sigma + 2.0**-16 / (1 - rate)


@pytest.mark.parametrize("bits", [16, 32])
def test_survivors_scaled_exactly_by_inverse_keep(bits):
  x = jax.random.normal(key(3), (1000,))
  y = np.asarray(jaxdrop.dropout(key(4), x, 0.3, mask_bits=bits))
  kept = y != 0
  expected = np.asarray(x) * np.float32(1 / (1 - 0.3))
  np.testing.assert_array_equal(y[kept], expected[kept])


def test_8_bit_survivors_scaled_by_inverse_realized_keep_probability():
  x = jnp.ones(N)
  keep = jaxdrop.keep_probability(0.3, mask_bits=8)
  assert keep == round(0.7 * 256) / 256
  y = np.asarray(jaxdrop.dropout(key(5), x, 0.3, mask_bits=8))
  np.testing.assert_array_equal(np.unique(y), np.array([0, np.float32(1 / keep)], np.float32))
  sigma = math.sqrt((1 - keep) / keep / N)
  assert abs(y.mean() - 1.0) < SIGMAS * sigma  # exact expectation, no 2**-16 slack


def test_lanes_of_one_word_are_independent():
  # Elements i and i + N/2 come from the two 16-bit halves of one word.
  y = np.asarray(jaxdrop.dropout(key(6), jnp.ones(N), 0.5)) == 0
  both = np.mean(y[: N // 2] & y[N // 2 :])
  sigma = math.sqrt(0.25 * 0.75 / (N // 2))
  assert abs(both - 0.25) < SIGMAS * sigma


def test_classic_and_inverted_agree_in_expectation():
  rate, x = 0.4, jnp.ones(N)
  classic_train = float(jnp.mean(jaxdrop.dropout(key(7), x, rate, mode="classic")))
  classic_eval = float(jaxdrop.dropout_eval(x, rate, mode="classic")[0])
  inverted_train = float(jnp.mean(jaxdrop.dropout(key(8), x, rate)))
  inverted_eval = float(jaxdrop.dropout_eval(x, rate)[0])
  assert classic_eval == np.float32(1 - rate) and inverted_eval == 1.0
  sigma = math.sqrt(rate * (1 - rate) / N)
  assert abs(classic_train - classic_eval) < SIGMAS * sigma
  assert abs(inverted_train - inverted_eval) < SIGMAS * sigma / (1 - rate) + 2.0**-16
  assert abs(classic_train / classic_eval - inverted_train / inverted_eval) < 2 * SIGMAS * sigma / (1 - rate)


def test_classic_mode_keeps_survivors_unscaled():
  x = jax.random.normal(key(9), (4096,))
  y = np.asarray(jaxdrop.dropout(key(10), x, 0.5, mode="classic"))
  assert np.all((y == 0) | (y == np.asarray(x)))


# --- exact properties ------------------------------------------------------------


def test_same_key_gives_bitwise_same_output_and_other_keys_differ():
  x = jax.random.normal(key(11), (64, 64))
  a = jaxdrop.dropout(key(12), x, 0.5)
  b = jaxdrop.dropout(key(12), x, 0.5)
  c = jaxdrop.dropout(key(13), x, 0.5)
  assert_trees_equal(a, b)
  assert not np.array_equal(a, c)


def test_typed_and_legacy_keys_are_accepted_and_agree():
  x = jnp.ones((32, 32))
  typed = jaxdrop.dropout(jax.random.key(14), x, 0.5)
  legacy = jaxdrop.dropout(jax.random.PRNGKey(14), x, 0.5)
  assert_trees_equal(typed, legacy)
  other_impl = jaxdrop.dropout(jax.random.key(14, impl="rbg"), x, 0.5)
  assert other_impl.shape == x.shape


def test_eager_jit_and_vmap_give_the_same_bits():
  x = jax.random.normal(key(15), (3, 257))
  keys = jax.random.split(key(16), 3)
  eager = [jaxdrop.dropout(keys[i], x[i], 0.3) for i in range(3)]
  jitted = [jax.jit(jaxdrop.dropout, static_argnums=2)(jax.random.split(key(16), 3)[i], x[i], 0.3) for i in range(3)]
  vmapped = jax.vmap(lambda k, v: jaxdrop.dropout(k, v, 0.3))(jax.random.split(key(16), 3), x)
  for i in range(3):
    assert_trees_equal(eager[i], jitted[i])
    assert_trees_equal(eager[i], vmapped[i])


@pytest.mark.parametrize("bits", [8, 16, 32])
def test_gradient_is_zero_on_dropped_and_scale_on_kept(bits):
  rate = 0.3
  x = jax.random.normal(key(17), (4096,))
  w = jax.random.normal(key(18), (4096,))
  y = np.asarray(jaxdrop.dropout(key(19), x, rate, mask_bits=bits))
  g = np.asarray(jax.grad(lambda v: jnp.sum(jaxdrop.dropout(key(19), v, rate, mask_bits=bits) * w))(x))
  kept = y != 0
  scale = np.float32(1 / jaxdrop.keep_probability(rate, mask_bits=bits))
  np.testing.assert_array_equal(g[~kept], 0)
  np.testing.assert_array_equal(g[kept], np.asarray(w)[kept] * scale)


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("affine", ["scale", "alpha-style affine", "invalid traced rate"])
def test_key_only_residual_gradient_equals_stored_mask_gradient_bitwise(bits, affine):
  # Both gradients are where(mask, g * scale, 0): equal by construction. For the NaN scale of an invalid
  # traced rate the kernel's is NaN on the kept elements and 0 on the dropped ones (plain autodiff of the
  # stored-mask version multiplies after the select: NaN everywhere).
  seed = jax.random.bits(key(20), (2,), jnp.uint32)
  x = jax.random.normal(key(21), (8, 300), jnp.bfloat16)
  args = (jnp.uint32(int(0.6 * 2**bits)), jnp.float32(1 / 0.6))
  if affine == "alpha-style affine":  # alpha dropout's: survivors a*x + b, dropped units a fill value
    args += (jnp.float32(0.25), jnp.float32(-1.7))
  if affine == "invalid traced rate":  # what seeded_dropout passes for one: NaN scale and fill
    args = (args[0], jnp.float32(jnp.nan), None, jnp.float32(jnp.nan))
  kw = dict(mask_shape=(8, 300), bits=bits)
  weight = jnp.cos(x) if affine == "invalid traced rate" else None  # the output itself is NaN there
  factor = lambda v: v if weight is None else weight
  loss = lambda f: (lambda v: jnp.sum((f(seed, v, *args, **kw) * factor(v)).astype(jnp.float32)))
  grad = jax.grad(loss(masked_affine))(x)
  if weight is None:
    assert_trees_equal(grad, jax.grad(loss(masked_affine_stored))(x))
  else:
    mask = np.asarray(_bits.bernoulli_lanes(seed, (8, 300), args[0], bits))
    grad = np.asarray(grad, np.float32)
    np.testing.assert_array_equal(np.isnan(grad), mask)
    np.testing.assert_array_equal(grad[~mask], 0)
    assert 0 < mask.sum() < mask.size


def test_backward_does_not_keep_the_mask_unpacked():
  x = jnp.ones((256, 256))
  _, vjp = jax.vjp(lambda v: jaxdrop.dropout(key(22), v, 0.5), x)
  residual_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "nbytes"))
  assert residual_bytes < 256 * 256 // 8 + 1024  # on CPU one bit an element (tests/jaxdrop/test_packed_mask.py)


def test_rate_one_returns_zeros_with_finite_gradient():
  x = jax.random.normal(key(23), (10,))
  g = jax.grad(lambda v: jnp.sum(jaxdrop.dropout(key(24), v, 1.0)))(x)
  np.testing.assert_array_equal(g, np.zeros(10, np.float32))
  traced = jax.jit(lambda r: jaxdrop.dropout(key(25), x, r))(jnp.float32(1.0))
  np.testing.assert_array_equal(traced, np.zeros(10, np.float32))
  g_traced = jax.grad(lambda v: jnp.sum(jaxdrop.dropout(key(26), v, jnp.float32(1.0))))(x)
  assert np.all(np.isfinite(g_traced))


def test_rate_zero_returns_input_unchanged_and_needs_no_key():
  x = jnp.arange(5.0)
  assert jaxdrop.dropout(None, x, 0.0) is x
  assert jaxdrop.dropout(None, x, 0) is x


def test_dropped_inf_and_nan_do_not_leak():
  x = jnp.full((4096,), jnp.inf).at[::2].set(jnp.nan)
  y = np.asarray(jaxdrop.dropout(key(27), x, 0.5))
  assert np.all((y == 0) | ~np.isfinite(y)) and np.any(y == 0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_dtype_preserved(dtype):
  x = jnp.ones((128,), dtype)
  assert jaxdrop.dropout(key(28), x, 0.3).dtype == dtype
  assert jaxdrop.dropout_eval(x, 0.3, mode="classic").dtype == dtype
  assert jax.grad(lambda v: jnp.sum(jaxdrop.dropout(key(29), v, 0.3)).astype(jnp.float32))(x).dtype == dtype


def test_traced_rate_sweep_under_vmap_matches_each_rate():
  x = jnp.ones((4, 1000))
  rates = jnp.array([0.0, 0.25, 0.5, 1.0], jnp.float32)
  swept = jax.vmap(lambda r: jaxdrop.dropout(key(30), x, r))(rates)
  for i, rate in enumerate([0.0, 0.25, 0.5, 1.0]):
    single = jaxdrop.dropout(key(30), x, rate)
    np.testing.assert_array_equal(np.asarray(swept[i]) == 0, np.asarray(single) == 0)
    np.testing.assert_allclose(swept[i], single, rtol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_traced_invalid_rate_gives_nan(bad):
  y = jax.jit(lambda r: jaxdrop.dropout(key(31), jnp.ones(16), r))(jnp.float32(bad))
  assert np.all(np.isnan(y))


def test_works_in_scan_and_compiles_once():
  traces = []

  def body(carry, k):
    traces.append(1)
    return carry + jaxdrop.dropout(k, jnp.ones(100), 0.5), None

  run = jax.jit(lambda ks: jax.lax.scan(body, jnp.zeros(100), ks)[0])
  total = run(jax.random.split(key(32), 10))
  run(jax.random.split(key(33), 10))
  assert len(traces) == 1
  assert np.all((np.asarray(total) % 2 == 0) & (np.asarray(total) <= 20))


def test_key_reuse_is_detected_in_the_test_suite():
  k = key(34)
  jaxdrop.dropout(k, jnp.ones(4), 0.5)
  with pytest.raises(jax.errors.KeyReuseError):
    jaxdrop.dropout(k, jnp.ones(4), 0.5)


# --- broadcast_dims --------------------------------------------------------------


def test_broadcast_dims_share_one_mask_value():
  x = jnp.ones((8, 16, 4))
  y = np.asarray(jaxdrop.dropout(key(35), x, 0.5, broadcast_dims=(1,)))
  assert np.all(y == y[:, :1, :])
  assert len(np.unique(y[:, 0, :])) == 2
  negative = np.asarray(jaxdrop.dropout(key(35), x, 0.5, broadcast_dims=(-2,)))
  np.testing.assert_array_equal(y, negative)


@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple),
    rate=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0, 1),
    mode=st.sampled_from(["inverted", "classic"]),
    bits=st.sampled_from([8, 16, 32]),
    data=st.data(),
)
def test_property_output_is_zero_or_scaled_input(shape, rate, mode, bits, data):
  dims = data.draw(st.sets(st.integers(0, max(len(shape) - 1, 0))).map(sorted)) if shape else []
  x = jax.random.normal(key(36), shape) + 0.5
  y = np.asarray(jaxdrop.dropout(key(37), x, rate, broadcast_dims=dims, mode=mode, mask_bits=bits))
  x = np.asarray(x)
  assert y.shape == x.shape and y.dtype == x.dtype
  keep = jaxdrop.keep_probability(rate, mask_bits=bits)
  scale = 1.0 if mode == "classic" or rate == 0 else (np.float32(1 / keep) if keep > 0 else 0.0)
  kept = (y == x * np.float32(scale)) & (y != 0)
  assert np.all(kept | (y == 0))
  for d in dims if x.size else []:
    np.testing.assert_array_equal(np.take(kept, [0], axis=d).repeat(shape[d], axis=d), kept)


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.0001, float("nan"), float("inf"), 2])
def test_rate_out_of_range_raises_value_error_naming_it(bad):
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\].*rate=" + repr(bad).replace(".", r"\.")):
    jaxdrop.dropout(key(38), jnp.ones(3), bad)


def test_rate_of_wrong_kind_raises():
  with pytest.raises(TypeError, match="rate"):
    jaxdrop.dropout(key(39), jnp.ones(3), "0.5")
  with pytest.raises(TypeError, match="rate"):
    jaxdrop.dropout(key(40), jnp.ones(3), True)
  with pytest.raises(ValueError, match="scalar"):
    jaxdrop.dropout(key(41), jnp.ones(3), np.array([0.1, 0.2]))


@pytest.mark.parametrize("x", [jnp.arange(3), jnp.array([True, False]), np.arange(3), [1.0, 2.0]])
def test_non_float_input_raises_type_error(x):
  with pytest.raises(TypeError, match="floating"):
    jaxdrop.dropout(key(42), x, 0.5)


def test_broadcast_dims_out_of_range_or_repeated():
  with pytest.raises(ValueError, match="out of range"):
    jaxdrop.dropout(key(43), jnp.ones((2, 3)), 0.5, broadcast_dims=(2,))
  with pytest.raises(ValueError, match="twice"):
    jaxdrop.dropout(key(44), jnp.ones((2, 3)), 0.5, broadcast_dims=(1, -1))


def test_missing_or_wrong_key():
  with pytest.raises(ValueError, match=r"jax\.random\.key"):
    jaxdrop.dropout(None, jnp.ones(3), 0.5)
  with pytest.raises(ValueError, match="vmap"):
    jaxdrop.dropout(jax.random.split(key(45), 2), jnp.ones(3), 0.5)
  with pytest.raises(TypeError, match="PRNG key"):
    jaxdrop.dropout(jnp.zeros(2, jnp.float32), jnp.ones(3), 0.5)


def test_unknown_mode_and_mask_bits():
  with pytest.raises(ValueError, match="mode must be one of"):
    jaxdrop.dropout(key(46), jnp.ones(3), 0.5, mode="keras")
  with pytest.raises(ValueError, match="mask_bits must be one of"):
    jaxdrop.dropout(key(47), jnp.ones(3), 0.5, mask_bits=12)


def test_dropout_eval_validates_too():
  with pytest.raises(ValueError, match="rate"):
    jaxdrop.dropout_eval(jnp.ones(3), 1.2)
  with pytest.raises(TypeError, match="floating"):
    jaxdrop.dropout_eval(jnp.arange(3), 0.2)
