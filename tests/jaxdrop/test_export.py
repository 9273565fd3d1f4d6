"""``jax.export`` with a symbolic batch dimension: every mask function exports (for CPU, and lowers for CUDA
and TPU), and the exported function, called with a concrete batch, draws the masks of the jitted function for
that shape, with its values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxdrop
from jaxdrop import _bits, attention
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_close_ulp


def key(seed=2):
  return jax.random.key(seed)  # a fresh key object per call (the tests check key reuse)


LSTM = jaxdrop.init_lstm_params(jax.random.key(5), 7, 4)
F = (5, 7)  # the features after the symbolic batch
CASES = {  # name: (fn(key, x), the shape after the batch, whether the output is exact)
    "dropout": (lambda k, x: jaxdrop.dropout(k, x, 0.3), F, True),
    "dropout 8-bit": (lambda k, x: jaxdrop.dropout(k, x, 0.3, mask_bits=8), F, True),
    "dropout 32-bit classic": (lambda k, x: jaxdrop.dropout(k, x, 0.3, mask_bits=32, mode="classic"), F,
                               True),
    "dropout shared over the batch": (lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(0,)), F, True),
    "dropout shared over time": (lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(1,)), F, True),
    "alpha_dropout": (lambda k, x: jaxdrop.alpha_dropout(k, x, 0.3), F, False),
    "gaussian_dropout": (lambda k, x: jaxdrop.gaussian_dropout(k, x, 0.3), F, False),
    "gaussian_noise": (lambda k, x: jaxdrop.gaussian_noise(k, x, 0.3, broadcast_dims=(2,)), F, False),
    "concrete_dropout": (lambda k, x: jaxdrop.concrete_dropout(k, x, 0.3), F, False),
    "concrete_dropout per unit": (lambda k, x: jaxdrop.concrete_dropout(k, x, jnp.linspace(0.1, 0.5, 7)), F,
                                  False),
    "drop_path": (lambda k, x: jaxdrop.drop_path(k, x, 0.3), F, True),
    "drop_connect": (lambda k, x: jaxdrop.drop_connect(k, x, 0.3), F, True),
    "drop_block": (lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3), (8, 8, 2), False),
    "drop_block shared over the batch": (
        lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3, broadcast_dims=(0,)), (8, 8, 2), False),
    "attention": (lambda k, x: attention.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=0.3),
                  (4, 2, 3), False),
    "attention, a mask per example": (
        lambda k, x: attention.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=0.3,
                                                     broadcast_dropout=False), (4, 2, 3), False),
    "attention blockwise": (
        lambda k, x: attention.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=0.3,
                                                     implementation="blockwise", block_q=3, block_k=2),
        (4, 2, 3), False),
    "attention blockwise, causal, lengths, a mask per example": (
        lambda k, x: attention.dot_product_attention(
            x, x, x, dropout_rng=k, dropout_rate=0.3, implementation="blockwise", block_q=3, block_k=2,
            is_causal=True, key_value_seq_lengths=jnp.array([3]), broadcast_dropout=False), (4, 2, 3), False),
    "linen Dropout": (
        lambda k, x: jdl.Dropout(0.3, broadcast_dims=(1,)).apply({}, x, deterministic=False, rng=k), F, True),
    "nnx Dropout": (lambda k, x: jdx.Dropout(0.3)(x, rngs=k), F, True),
    "lstm": (lambda k, x: jaxdrop.lstm(LSTM, x, key=k, dropout=0.3, recurrent_dropout=0.2, zoneout_cell=0.1,
                                       return_sequences=True), F, False),
}


def batch_spec(features, constraints=()):
  shape = export.symbolic_shape(", ".join(["b", *map(str, features)]), constraints=constraints)
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def assert_same_draw(actual, expected, exact):
  """Bitwise where the output is exact by construction: each element 0 or the one rounding fl(x * scale)
  (dropout's kernel), whatever program computes it. Elsewhere the exported program (64-bit index arithmetic,
  shapes resolved at call time) may fuse a multiply-add or a reduction otherwise than the jitted one: the
  dropped elements (the masks) must be the same, the values equal within a few ulp."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  np.testing.assert_array_equal(actual == 0, expected == 0)
  if exact:
    np.testing.assert_array_equal(actual, expected)
  else:
    assert_close_ulp(actual, expected, ulp=4, scale="max")


@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_with_a_symbolic_batch_and_draws_the_jitted_masks(name):
  fn, features, exact = CASES[name]
  exported = export.export(jax.jit(fn), platforms=("cpu",))(key(), batch_spec(features))
  assert export.is_symbolic_dim(exported.in_avals[1].shape[0])
  jitted = jax.jit(fn)
  for batch in (1, 3):
    x = jax.random.normal(jax.random.key(1), (batch, *features))
    expected = jitted(key(), x)
    assert_same_draw(exported.call(key(), x), expected, exact)
  assert expected.shape != x.shape or np.any(np.asarray(expected) != np.asarray(x))  # dropped or noised
  accelerators = export.export(jax.jit(fn), platforms=("cuda", "tpu"))(key(), batch_spec(features))
  assert accelerators.platforms == ("cuda", "tpu")


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("partitioned", [False, True], ids=["one device", "several devices"])
def test_exported_masks_are_the_masks_of_each_concrete_shape(bits, partitioned, monkeypatch):
  # The mask is a function of (key, element index): a symbolic batch (64-bit index arithmetic) must give, for
  # every concrete batch, bitwise the mask of that shape (32-bit arithmetic), on both generator paths.
  monkeypatch.setattr(_bits, "_unpartitioned", lambda: not partitioned)
  jax.clear_caches()  # the generator's helpers are jitted: trace them again on this path
  threshold = 2**bits // 3 if bits < 32 else 2**32 // 3
  mask = lambda seed, x: _bits.bernoulli_lanes(seed, x.shape, threshold, bits)
  seed = _bits.derive_seed(key())
  exported = export.export(jax.jit(mask), platforms=("cpu",))(seed, batch_spec((3, 5)))
  for batch in (1, 2, 7):
    x = jnp.zeros((batch, 3, 5))
    np.testing.assert_array_equal(exported.call(seed, x), jax.jit(mask)(seed, x))
    np.testing.assert_array_equal(exported.call(seed, x), mask(seed, x))
  jax.clear_caches()


def test_the_index_width_of_a_symbolic_size():
  (b,) = export.symbolic_shape("b")
  (bounded,) = export.symbolic_shape("b", constraints=("b <= 65536",))
  assert _bits._needs_64_bits(784 * b)  # unbounded: cannot be proven at most 2**32 elements
  assert not _bits._needs_64_bits(784 * bounded)  # proven: 32-bit indices, as for a concrete shape
  assert not _bits._needs_64_bits(2**32) and _bits._needs_64_bits(2**32 + 1)
  x = jax.random.normal(jax.random.key(1), (3, 784))
  fn = jax.jit(lambda k, x: jaxdrop.dropout(k, x, 0.5))
  exported = export.export(fn, platforms=("cpu",))(key(), batch_spec((784,), ("b <= 65536",)))
  np.testing.assert_array_equal(exported.call(key(), x), fn(key(), x))


def test_a_traced_rate_and_the_gradient_export_too():
  fn = jax.jit(lambda k, x, rate: jaxdrop.dropout(k, x, rate))
  rate = jax.ShapeDtypeStruct((), jnp.float32)
  exported = export.export(fn, platforms=("cpu",))(key(), batch_spec(F), rate)
  x = jax.random.normal(jax.random.key(1), (4, *F))
  np.testing.assert_array_equal(exported.call(key(), x, jnp.float32(0.3)), fn(key(), x, jnp.float32(0.3)))
  assert np.all(np.isnan(exported.call(key(), x, jnp.float32(1.5))))  # an invalid traced rate: NaN, as jitted
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(jaxdrop.dropout(k, x, 0.3)))))
  exported_grad = export.export(grad, platforms=("cpu",))(batch_spec(F), key())
  assert_same_draw(exported_grad.call(x, key()), grad(x, key()), exact=False)


def test_the_blockwise_gradient_exports_for_every_platform():
  # The blockwise path's forward and backward loops (custom_vjp) lower for CUDA and TPU too; the CPU export,
  # called, is the jitted gradient.
  def loss(x, k):
    out = attention.dot_product_attention(x, x, x, dropout_rng=k, dropout_rate=0.3, implementation="blockwise",
                                          block_q=3, block_k=2, is_causal=True, broadcast_dropout=False)
    return jnp.sum(jnp.sin(out))

  grad = jax.jit(jax.grad(loss))
  x = jax.random.normal(jax.random.key(1), (2, 4, 2, 3))
  exported = export.export(grad, platforms=("cpu",))(batch_spec((4, 2, 3)), key())
  assert_same_draw(exported.call(x, key()), grad(x, key()), exact=False)
  accelerators = export.export(grad, platforms=("cuda", "tpu"))(batch_spec((4, 2, 3)), key())
  assert accelerators.platforms == ("cuda", "tpu")
