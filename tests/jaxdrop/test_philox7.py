"""The opt-in 7-round generator: keys of ``jaxdrop.PHILOX7`` draw their masks from Philox-4x32-7.

The reference is an independent NumPy Philox-4x32, checked against Random123's known-answer vectors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
import jaxdrop.linen as jdl
import jaxdrop.nnx as jdx
from jaxdrop import _bits, _packed_mask
from jaxdrop._masked import keep_for
from tests._asserts import vjp_residuals

# Random123's kat_vectors: rounds, counter, key, the four output words.
KNOWN_ANSWERS = [
    (7, [0, 0, 0, 0], [0, 0], [0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48]),
    (7, [0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662]),
    (7, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A]),
    (10, [0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    (10, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


def numpy_philox(rounds, counter, key):
  """Philox-4x32 of ``rounds`` rounds in NumPy (``uint64`` products), elementwise over the counter words."""
  x0, x1, x2, x3 = (np.asarray(c, np.uint64) for c in counter)
  k0, k1 = (np.uint64(k) for k in key)
  low = np.uint64(0xFFFFFFFF)
  for r in range(rounds):
    if r:
      k0, k1 = (k0 + np.uint64(0x9E3779B9)) & low, (k1 + np.uint64(0xBB67AE85)) & low
    p0, p1 = np.uint64(0xD2511F53) * x0, np.uint64(0xCD9E8D57) * x2
    x0, x1, x2, x3 = (p1 >> np.uint64(32)) ^ x1 ^ k0, p1 & low, (p0 >> np.uint64(32)) ^ x3 ^ k1, p0 & low
  return [x.astype(np.uint32) for x in (x0, x1, x2, x3)]


@pytest.mark.parametrize("rounds, counter, key, expected", KNOWN_ANSWERS)
def test_the_numpy_reference_and_the_kernel_give_random123s_known_answers(rounds, counter, key, expected):
  assert [int(w) for w in numpy_philox(rounds, counter, key)] == expected
  ours = _bits._philox(*(jnp.uint32(k) for k in key), *(jnp.uint32(c) for c in counter), rounds)
  assert [int(w) for w in ours] == expected


def key7(i=0):
  return jax.random.key(i, impl=jaxdrop.PHILOX7)


def reference_stream(rounds, seed, count):
  """The documented streams: word ``j`` is the XOR of the four words of Philox-4x32-10 at the counter ``(0, j,
  0, 0)``, or, for 7 rounds, word ``j % 4`` of Philox-4x32-7 at ``(0, j // 4, 0, 0)``."""
  j = np.arange(count, dtype=np.uint64)
  zero = np.zeros(count, np.uint64)
  if rounds == 10:
    out = numpy_philox(10, [zero, j, zero, zero], seed)
    return out[0] ^ out[1] ^ out[2] ^ out[3]
  out = np.stack(numpy_philox(7, [zero, j // np.uint64(4), zero, zero], seed))
  return out[(j % np.uint64(4)).astype(int), np.arange(count)]


def reference_mask(key, shape, rate, bits=16, rounds=7):  # key: a fresh one (the suite checks key reuse)
  """The documented layout on the reference stream, under the key's two seed words: element ``i`` is lane
  ``i // m`` of word ``i % m``."""
  seed = np.asarray(_bits._seed_words(_bits.derive_seed(key)))
  size, lanes = int(np.prod(shape)), 32 // bits
  m = -(-size // lanes)
  words = reference_stream(rounds, seed, m)
  i = np.arange(size)
  lane = (words[i % m] >> (bits * (i // m)).astype(np.uint32)) & np.uint32(2**bits - 1)
  return (lane < keep_for(rate, bits).threshold).reshape(shape)


@pytest.fixture(params=["partitionable", "one device"])
def mask_path(request, monkeypatch):
  """Both code paths of the generator: elementwise (the test process has 8 CPU devices) and one device's."""
  if request.param == "one device":
    monkeypatch.setattr(_bits, "_unpartitioned", lambda: True)
  return request.param


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("shape", [(7,), (64, 48), (3, 5, 33)])
def test_masks_of_philox7_keys_are_the_reference_7_round_stream(mask_path, bits, shape):
  x = jnp.ones(shape)
  y = jaxdrop.dropout(key7(3), x, 0.3, mask_bits=bits)
  np.testing.assert_array_equal(np.asarray(y) != 0, reference_mask(key7(3), shape, 0.3, bits))


def test_other_keys_keep_the_10_round_stream(mask_path):
  x = jnp.ones((64, 48))
  for impl in ("threefry2x32", "rbg", _bits.PHILOX, None):
    key = (lambda: jax.random.PRNGKey(3)) if impl is None else (lambda i=impl: jax.random.key(3, impl=i))
    y = jaxdrop.dropout(key(), x, 0.3)
    np.testing.assert_array_equal(np.asarray(y) != 0, reference_mask(key(), x.shape, 0.3, rounds=10))
  seven = jaxdrop.dropout(key7(3), x, 0.3) != 0
  assert np.mean(np.asarray(seven) != reference_mask(key7(3), x.shape, 0.3, rounds=10)) > 0.3


def test_mask_generator_names_the_generator_of_each_key_type():
  assert jaxdrop.mask_generator(key7()) == jaxdrop.MASK_GENERATOR_7
  for key in (jax.random.key(0), jax.random.PRNGKey(0), jax.random.key(0, impl="rbg"),
              jax.random.key(0, impl=_bits.PHILOX)):
    assert jaxdrop.mask_generator(key) == jaxdrop.MASK_GENERATOR
  assert jaxdrop.MASK_GENERATOR_7 != jaxdrop.MASK_GENERATOR
  assert jaxdrop.mask_generator(jax.random.fold_in(key7(), 3)) == jaxdrop.MASK_GENERATOR_7  # follows the key
  assert jaxdrop.mask_generator(jax.random.split(key7(), 3)) == jaxdrop.MASK_GENERATOR_7  # a batch of keys
  for not_a_key in ("key", 0, jnp.zeros(2), jnp.zeros(3, jnp.uint32)):
    with pytest.raises(TypeError, match="jaxdrop.mask_generator takes a PRNG key"):
      jaxdrop.mask_generator(not_a_key)


def test_a_philox7_key_is_philox_4x32_7_for_jax_random_too():
  data = np.asarray(jax.random.key_data(key7(5)))
  bits = np.asarray(jax.random.bits(key7(5), (9,), jnp.uint32))
  out = numpy_philox(7, [np.zeros(9, np.uint64), np.arange(9, dtype=np.uint64), np.zeros(9, np.uint64),
                         np.zeros(9, np.uint64)], data)
  np.testing.assert_array_equal(bits, out[0] ^ out[1] ^ out[2] ^ out[3])
  np.testing.assert_array_equal(jax.random.key_data(jax.random.key(5, impl=jaxdrop.PHILOX7)), data)
  assert jax.random.key_impl(jax.random.split(key7(5))[0]) == jaxdrop.PHILOX7


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_fraction_is_within_five_sigma(mask_path, rate):
  n = 2**18
  y = jaxdrop.dropout(key7(11), jnp.ones((n,)), rate)
  assert abs(float(jnp.mean(y == 0)) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_array_equal(np.unique(np.asarray(y)), [0.0, np.float32(1 / (1 - rate))])


def test_jit_grad_vmap_and_remat_follow_the_same_mask(mask_path):
  x = jax.random.normal(jax.random.key(0), (32, 64))
  y = jaxdrop.dropout(key7(2), x, 0.5)
  np.testing.assert_array_equal(jax.jit(jaxdrop.dropout, static_argnums=2)(key7(2), x, 0.5), y)
  grad = jax.grad(lambda x: jnp.sum(jaxdrop.dropout(key7(2), x, 0.5)))(x)
  np.testing.assert_array_equal(grad != 0, y != 0)
  batched = jax.vmap(lambda k: jaxdrop.dropout(k, x, 0.5))(jax.random.split(key7(2), 3))
  for i in range(3):
    np.testing.assert_array_equal(batched[i], jaxdrop.dropout(jax.random.split(key7(2), 3)[i], x, 0.5))
  remat = jax.checkpoint(lambda x: jaxdrop.dropout(key7(2), x, 0.5))
  kept = vjp_residuals(remat, x)
  assert all(np.prod(r.shape) <= 1 for r in kept), kept  # the seed (a PHILOX7 key) and scalars: no mask


def test_blockwise_attention_tiles_are_the_whole_mask():
  shape = (2, 4, 96, 80)
  whole = _bits.bernoulli_lanes(_bits.derive_seed(key7(4)), shape, 40000, 16)
  tile = _bits.tile_bernoulli(_bits.derive_seed(key7(4)), shape, 40000, 16, (0, 0, 32, 16), (2, 4, 32, 48))
  np.testing.assert_array_equal(tile, whole[:, :, 32:64, 16:64])
  q = jax.random.normal(jax.random.key(1), (2, 128, 4, 16))
  attend = lambda impl, key: jaxdrop.attention.dot_product_attention(
      q, q, q, dropout_rng=key, dropout_rate=0.2, broadcast_dropout=False, implementation=impl)
  reference = attend("reference", key7(4))
  np.testing.assert_allclose(attend("blockwise", key7(4)), reference, rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(reference - attend("reference", jax.random.key(4))))) > 0.1


def test_noise_beside_the_masks_comes_from_the_keys_generator():
  x = jnp.zeros((16, 16))
  np.testing.assert_array_equal(jaxdrop.gaussian_noise(key7(6), x, 1.0),
                                jax.random.normal(_bits.derive_seed(key7(6)), x.shape, x.dtype))


def test_linen_dropout_follows_the_rngs_key_type():
  x = jnp.ones((8, 256))
  layer = jdl.Dropout(0.5)
  seven = layer.apply({}, x, deterministic=False, rngs={"dropout": key7(1)})
  np.testing.assert_array_equal(seven, layer.apply({}, x, deterministic=False, rngs={"dropout": key7(1)}))
  default = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert np.mean(np.asarray(seven) != np.asarray(default)) > 0.3


def test_nnx_dropout_follows_the_rngs_key_type():
  x = jnp.ones((8, 256))
  y = jdx.Dropout(0.5)(x, rngs=nnx.Rngs(dropout=key7(2)))
  drawn = lambda: nnx.Rngs(dropout=key7(2)).dropout()  # the key the layer draws from its stream
  np.testing.assert_array_equal(np.asarray(y) != 0, reference_mask(drawn(), x.shape, 0.5))


def test_lowers_for_gpu_and_tpu():
  def f(data, x):
    return jaxdrop.dropout(jax.random.wrap_key_data(data, impl=jaxdrop.PHILOX7), x, 0.25)

  data = jax.random.key_data(key7(0))
  exported = jax.export.export(jax.jit(f), platforms=("cpu", "cuda", "tpu"))(data, jnp.ones((64, 32)))
  np.testing.assert_array_equal(exported.call(data, jnp.ones((64, 32))), f(data, jnp.ones((64, 32))))


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("shape", [(64,), (16, 48), (4, 6, 32)])
def test_the_packed_mask_hashes_quads_and_holds_the_streams_bits(bits, shape):
  threshold = keep_for(0.3, bits).threshold
  packed = _packed_mask.pack_mask(_bits.derive_seed(key7(8)), shape, threshold, bits)
  np.testing.assert_array_equal(_packed_mask.unpack_mask(packed, shape),
                                _bits.bernoulli_lanes(_bits.derive_seed(key7(8)), shape, threshold, bits))
  np.testing.assert_array_equal(_packed_mask.unpack_mask(packed, shape), reference_mask(key7(8), shape, 0.3, bits))


@pytest.mark.parametrize("word", [5, 2**32 - 1, 2**32, 3 * 2**32 + 9, 2**34 + 6, 2**40 + 3])
def test_word_numbers_past_32_bits_split_into_quad_and_part(word):
  seed = _bits.derive_seed(key7(9))
  with _bits._wide(True):
    hi, lo = _bits._word_counter(jnp.asarray(np.uint64(word)))
    got = int(_bits._hash(seed, hi, lo))
  quad = word // 4
  out = numpy_philox(7, [np.uint64(quad >> 32), np.uint64(quad & 0xFFFFFFFF), np.uint64(0), np.uint64(0)],
                     np.asarray(_bits._seed_words(seed)))
  assert got == int(out[word % 4])
