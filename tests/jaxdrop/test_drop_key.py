"""DropKey (Li et al., 2023) in jaxdrop.attention.dot_product_attention: the same mask bits on the reference and
the blockwise path, the formula (a softmax over the kept logits, not rescaled) against NumPy, fully dropped rows,
a key-only backward pass, the keys, the per-layer schedule and the linen and NNX layers."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdrop import _bits
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from jaxdrop._masked import keep_for
from jaxdrop.attention import dot_product_attention, drop_key_rates
from tests._asserts import assert_close_ulp, assert_same_mask, assert_trees_equal

B, L, H, D = 2, 13, 2, 4
RATE = 0.3


def qkv(seed=0, lk=L):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, L, H, D)), jax.random.normal(kk, (B, lk, H, D)),
          jax.random.normal(kv, (B, lk, H, D)))


def attend(implementation, q, k, v, *, rate=RATE, seed=5, **kwargs):
  return dot_product_attention(q, k, v, drop_key_rate=rate, dropout_rng=jax.random.key(seed),
                               implementation=implementation, block_q=4, block_k=5, **kwargs)


def keep_mask(shape, rate=RATE, seed=5):
  """The DropKey mask drawn directly from the key (DropKey alone: the key's seed, unsplit)."""
  return np.asarray(_bits.bernoulli_lanes(_bits.derive_seed(jax.random.key(seed)), shape,
                                          keep_for(rate, 16).threshold, 16))


@pytest.mark.parametrize(("broadcast_dropout", "is_causal"), [(True, False), (False, True)])
def test_both_paths_drop_exactly_the_mask_of_the_key(broadcast_dropout, is_causal):
  # One-hot values make the output the weights themselves, and zero queries make every kept, allowed weight
  # positive (uniform over the kept keys): the zero pattern is the mask, compared exactly on both paths.
  q = jnp.zeros((B, L, H, D))
  k = jax.random.normal(jax.random.key(1), (B, L, H, D))
  v = jnp.broadcast_to(jnp.eye(L)[None, :, None, :], (B, L, H, L))
  kwargs = dict(broadcast_dropout=broadcast_dropout, is_causal=is_causal)
  shape = (1, 1, L, L) if broadcast_dropout else (B, H, L, L)
  keep = keep_mask(shape)
  allowed = np.tril(np.ones((L, L), bool)) if is_causal else np.ones((L, L), bool)
  expected = np.broadcast_to(keep & allowed, (B, H, L, L))
  for implementation in ("reference", "blockwise"):
    weights = np.moveaxis(np.asarray(attend(implementation, q, k, v, **kwargs)), -2, -3)  # (B, H, Lq, Lk)
    np.testing.assert_array_equal(weights != 0, expected)
    some = expected.any(-1, keepdims=True)  # uniform over the kept keys (not rescaled), rows of none: zeros
    uniform = np.where(some, expected / np.maximum(expected.sum(-1, keepdims=True), 1), 0)
    assert_close_ulp(weights, uniform.astype(np.float32), ulp=4, scale="max")
  # the mask is a Bernoulli draw of the rate: the dropped fraction within 4 sigma
  big = keep_mask((64, 64, 64))
  assert abs((1 - big.mean()) - RATE) < 4 * np.sqrt(RATE * (1 - RATE) / big.size)


def numpy_drop_key(q, k, v, keep, bias, mask):
  """The formula in float64: ``softmax`` over the kept, allowed logits; a row with none kept is zeros."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + np.asarray(bias, np.float64)
  allowed = keep & np.asarray(mask)
  logits = np.where(allowed, logits, -np.inf)
  top = np.max(logits, axis=-1, keepdims=True)
  e = np.where(allowed, np.exp(logits - np.where(np.isfinite(top), top, 0)), 0.0)
  total = e.sum(-1, keepdims=True)
  weights = np.where(total > 0, e / np.where(total > 0, total, 1), 0.0)
  return np.einsum("bhqk,bkhd->bqhd", weights, v)


def test_the_formula_against_numpy_with_fully_dropped_rows():
  # 5 keys at rate 0.7: about 17% of the 52 rows drop every key (zeros, as a fully masked row).
  rate, lk = 0.7, 5
  q, k, v = qkv(lk=lk)
  bias = jax.random.normal(jax.random.key(9), (1, H, L, lk))
  mask = jax.random.bernoulli(jax.random.key(8), 0.9, (B, 1, L, lk))
  keep = keep_mask((B, H, L, lk), rate)
  assert (~(keep & np.asarray(mask)).any(-1)).any()  # some rows have no kept key
  expected = numpy_drop_key(q, k, v, keep, bias, mask)
  for implementation in ("reference", "blockwise"):
    out = attend(implementation, q, k, v, rate=rate, bias=bias, mask=mask, broadcast_dropout=False)
    assert_same_mask(out, expected)  # the fully dropped rows exactly zero
    assert_close_ulp(np.asarray(out, np.float64), expected, ulp=64, scale="max", dtype=np.float32)


def test_gradients_agree_are_finite_and_the_backward_pass_keeps_no_mask():
  # With attention dropout as well (the key split in two): the paths agree on values and gradients to float
  # rounding, also on rows with no kept key (rate 0.7 over 5 keys).
  q, k, v = qkv(lk=5)
  kwargs = dict(rate=0.7, dropout_rate=0.2, broadcast_dropout=False)

  def loss(implementation, q, k, v):
    out = attend(implementation, q, k, v, **kwargs)
    return jnp.sum(jnp.sin(out)), out

  results = {}
  for implementation in ("reference", "blockwise"):
    grads, out = jax.jit(jax.grad(functools.partial(loss, implementation), argnums=(0, 1, 2), has_aux=True))(
        q, k, v)
    assert all(np.all(np.isfinite(g)) for g in grads)
    results[implementation] = out, grads
    # key-only: no residual of the backward pass holds the mask (the reference path keeps, as for a `mask`,
    # whether each row has a kept key: a boolean constant along the keys)
    _, vjp = jax.vjp(lambda q, k, v: attend(implementation, q, k, v, **kwargs), q, k, v)
    masks = [np.asarray(x) for x in jax.tree.leaves(vjp) if getattr(x, "dtype", None) == jnp.bool_]
    assert not [m.shape for m in masks if m.ndim and np.any(m != m[..., :1])]
  (ref, ref_grads), (tiled, tiled_grads) = results["reference"], results["blockwise"]
  assert_same_mask(tiled, ref)
  assert_close_ulp(tiled, ref, ulp=16, scale="max")
  for g, r in zip(tiled_grads, ref_grads, strict=True):
    assert_close_ulp(g, r, ulp=32, scale="max")


def test_keys_evaluation_and_invalid_traced_rates():
  q, k, v = qkv()
  plain = dot_product_attention(q, k, v, implementation="reference")
  # evaluation: no DropKey, whatever the rate; drop_key_deterministic overrides deterministic
  evaluation = dot_product_attention(q, k, v, drop_key_rate=RATE, deterministic=True, implementation="reference")
  assert_trees_equal(evaluation, plain)  # the same program's branch: no DropKey term at all
  forced = dot_product_attention(q, k, v, drop_key_rate=RATE, deterministic=True, drop_key_deterministic=False,
                                 dropout_rng=jax.random.key(5), implementation="reference")
  assert_close_ulp(forced, attend("reference", q, k, v), ulp=0)  # as training: the same operations and seed
  assert not np.allclose(forced, plain)
  # both active from one key: the key split in two (attention dropout, DropKey), as explicit keys give
  first, second = jax.random.split(jax.random.key(5))
  both = attend("reference", q, k, v, dropout_rate=0.2)
  explicit = dot_product_attention(q, k, v, drop_key_rate=RATE, dropout_rate=0.2, dropout_rng=first,
                                   drop_key_rng=second, implementation="reference", block_q=4, block_k=5)
  assert_close_ulp(both, explicit, ulp=0)  # the same operations on the same seeds
  # a traced rate outside [0, 1] gives NaN, on both paths
  for implementation in ("reference", "blockwise"):
    bad = jax.jit(lambda r, implementation=implementation: attend(implementation, q, k, v, rate=r))(1.5)
    assert np.all(np.isnan(bad))
  with pytest.raises(ValueError, match="dropout_rng"):
    dot_product_attention(q, k, v, drop_key_rate=RATE)
  with pytest.raises(ValueError, match="drop_key_rate"):
    dot_product_attention(q, k, v, drop_key_rate=1.5, dropout_rng=jax.random.key(0))


def test_drop_key_rates_fall_linearly_with_depth():
  assert drop_key_rates(0.3, 4) == pytest.approx((0.3, 0.2, 0.1, 0.0), abs=1e-12)
  assert drop_key_rates(0.3, 3, end=0.1) == pytest.approx((0.3, 0.2, 0.1), abs=1e-12)
  assert drop_key_rates(0.2, 1) == (0.2,)
  with pytest.raises(ValueError, match="depth"):
    drop_key_rates(0.1, 0)
  with pytest.raises(ValueError, match="max_rate"):
    drop_key_rates(1.5, 3)


def test_linen_layers_take_drop_key_rate():
  x = jax.random.normal(jax.random.key(0), (2, 7, 8))
  layer = jdl.MultiHeadDotProductAttention(num_heads=2, drop_key_rate=RATE)
  variables = layer.init(jax.random.key(0), x, deterministic=True)
  rng = lambda: jax.random.key(3)  # noqa: E731  (the same key, a fresh object each time: no key reuse)
  out = layer.apply(variables, x, deterministic=False, dropout_rng=rng())
  # Flax's layer with the function's DropKey bound and the same key: the same computation
  bound = functools.partial(dot_product_attention, drop_key_rate=RATE, drop_key_deterministic=False)
  flax_out = nn.MultiHeadDotProductAttention(num_heads=2, attention_fn=bound).apply(
      variables, x, deterministic=False, dropout_rng=rng())
  assert_close_ulp(out, flax_out, ulp=0)
  evaluation = layer.apply(variables, x, deterministic=True)
  assert_close_ulp(evaluation, nn.MultiHeadDotProductAttention(num_heads=2).apply(variables, x), ulp=2,
                   scale="max")
  assert not np.allclose(out, evaluation)
  # a call-time rate (a per-layer schedule), from the "dropout" stream
  zero = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)}, drop_key_rate=0.0)
  assert_close_ulp(zero, evaluation, ulp=0)
  traced = jax.jit(lambda r: layer.apply(variables, x, deterministic=False, dropout_rng=rng(), drop_key_rate=r))
  assert_close_ulp(traced(RATE), out, ulp=4, scale="max")
  self_attention = jdl.SelfAttention(num_heads=2, drop_key_rate=RATE, deterministic=False)
  with pytest.warns(DeprecationWarning, match="SelfAttention"):  # flax's own warning
    assert_close_ulp(self_attention.apply(variables, x, dropout_rng=rng()), out, ulp=0)
  with pytest.raises(Exception, match="dropout"):
    layer.apply(variables, x, deterministic=False)
  with pytest.raises(ValueError, match="attention_fn"):
    jdl.MultiHeadDotProductAttention(num_heads=2, drop_key_rate=RATE, attention_fn=nn.dot_product_attention
                                     ).apply(variables, x, deterministic=False, dropout_rng=rng())


def test_nnx_layer_takes_drop_key_rate():
  x = jax.random.normal(jax.random.key(0), (2, 7, 8))
  layer = jdx.MultiHeadAttention(num_heads=2, in_features=8, drop_key_rate=RATE, decode=False,
                                 rngs=nnx.Rngs(0))
  evaluation = layer(x, deterministic=True)
  train = layer(x, deterministic=False)
  assert np.all(np.isfinite(train)) and not np.allclose(train, evaluation)
  assert not np.allclose(layer(x, deterministic=False), train)  # the stream moves on
  assert_close_ulp(layer(x, deterministic=False, drop_key_rate=0.0), evaluation, ulp=0)
  layer.eval()
  assert_close_ulp(layer(x), evaluation, ulp=0)
  # with attention dropout too, and under nnx.jit
  both = jdx.MultiHeadAttention(num_heads=2, in_features=8, drop_key_rate=RATE, dropout_rate=0.1, decode=False,
                                rngs=nnx.Rngs(0))
  assert np.all(np.isfinite(nnx.jit(lambda m, x: m(x, deterministic=False))(both, x)))
  no_stream = jdx.MultiHeadAttention(num_heads=2, in_features=8, drop_key_rate=RATE, decode=False,
                                     keep_rngs=False, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="random stream"):
    no_stream(x, deterministic=False)
