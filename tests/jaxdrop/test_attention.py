"""Attention dropout that keeps no mask: Flax's values at evaluation, unbiased training, Flax's layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from jaxdrop.attention import dot_product_attention
from tests._asserts import assert_trees_close, assert_trees_equal

B, L, H, D = 2, 16, 4, 8


def qkv(seed=0, shape=(B, L, H, D)):
  return [jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(seed), 3)]


def test_evaluation_equals_flax_linen_with_mask_bias_and_dtype():
  q, k, v = qkv()
  mask = nn.make_causal_mask(jnp.ones((B, L)))
  bias = jax.random.normal(jax.random.key(1), (1, H, L, L))
  # Bitwise by construction: both run eagerly the same primitives in the same order (flax.nnx's weights
  # function is linen's: scale q, einsum, bias, mask, softmax; then the same einsum over the values).
  for kwargs in ({}, {"mask": mask}, {"bias": bias, "mask": mask}, {"dtype": jnp.bfloat16}):
    expected = nn.dot_product_attention(q, k, v, dropout_rate=0.3, deterministic=True, **kwargs)
    assert_trees_equal(dot_product_attention(q, k, v, dropout_rate=0.3, deterministic=True, **kwargs), expected)
  causal = dot_product_attention(q, k, v, is_causal=True)
  assert_trees_equal(causal, nn.dot_product_attention(q, k, v, mask=mask))  # the same mask selects alike


def test_linen_and_nnx_layers_are_flax_layers_with_this_attention():
  x = jax.random.normal(jax.random.key(2), (B, L, H * D))
  ours, theirs = jdl.MultiHeadDotProductAttention(num_heads=H, dropout_rate=0.2), nn.MultiHeadDotProductAttention(
      num_heads=H, dropout_rate=0.2)
  assert ours.attention_fn is dot_product_attention
  variables = theirs.init(jax.random.key(3), x, deterministic=True)
  assert jax.tree.structure(ours.init(jax.random.key(3), x, deterministic=True)) == jax.tree.structure(variables)
  # Bitwise by construction: the layers differ only in attention_fn, which at evaluation runs Flax's own ops.
  assert_trees_equal(ours.apply(variables, x, deterministic=True), theirs.apply(variables, x, deterministic=True))
  trained = ours.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  assert trained.shape == x.shape and not np.allclose(trained, theirs.apply(variables, x, deterministic=True))
  assert jdl.SelfAttention(num_heads=H).attention_fn is dot_product_attention

  ours_nnx = jdx.MultiHeadAttention(num_heads=H, in_features=H * D, dropout_rate=0.2, decode=False,
                                    rngs=nnx.Rngs(5))
  theirs_nnx = nnx.MultiHeadAttention(num_heads=H, in_features=H * D, dropout_rate=0.2, decode=False,
                                      rngs=nnx.Rngs(5))
  ours_nnx.eval()
  theirs_nnx.eval()
  assert_trees_equal(ours_nnx(x), theirs_nnx(x))
  ours_nnx.train()
  assert not np.allclose(ours_nnx(x), theirs_nnx(x))


def probe(rate, broadcast_dropout, seed=6, batch=3):
  """The dropped weights themselves: uniform weights (q = k = 0) and one-hot values read them out."""
  zeros = jnp.zeros((batch, L, H, D))
  value = jnp.broadcast_to(jnp.eye(L)[None, :, None, :], (batch, L, H, L))
  out = dot_product_attention(zeros, zeros, value, dropout_rng=jax.random.key(seed), dropout_rate=rate,
                              broadcast_dropout=broadcast_dropout)
  return np.asarray(jnp.moveaxis(out, 2, 1))  # (batch, heads, q, k)


def test_dropped_weights_are_inverted_dropout_of_the_softmax():
  weights = probe(0.25, broadcast_dropout=False, batch=64)
  kept = weights != 0
  np.testing.assert_allclose(weights[kept], 1 / L / 0.75, rtol=1e-6)  # survivors scaled by 1 / (1 - rate)
  n = kept.size
  assert abs((~kept).mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


def test_broadcast_dropout_shares_the_mask_over_batch_and_heads_as_flax_defines():
  shared = probe(0.5, broadcast_dropout=True) != 0
  assert (shared == shared[:1, :1]).all()
  own = probe(0.5, broadcast_dropout=False) != 0
  assert len({own[b, h].tobytes() for b in range(own.shape[0]) for h in range(H)}) == own.shape[0] * H


def test_training_output_is_unbiased():
  q, k, v = qkv(7, (1, 8, 2, 4))
  keys = jax.random.split(jax.random.key(8), 4000)
  samples = jax.vmap(lambda key: dot_product_attention(q, k, v, dropout_rng=key, dropout_rate=0.3,
                                                       broadcast_dropout=False))(keys)
  expected = dot_product_attention(q, k, v)
  z = (samples.mean(0) - expected) / (samples.std(0) / np.sqrt(len(keys)))
  assert float(jnp.abs(z).max()) < 5


def test_gradient_equals_the_stored_mask_version():
  q, k, v = qkv(9)
  key = jax.random.key(10)

  def stored(q, k, v):  # the same mask, kept by plain autodiff
    weights = nn.dot_product_attention_weights(q, k)
    dropped = jaxdrop.dropout(jax.random.clone(key), weights, 0.3, broadcast_dims=(0, 1))
    return jnp.einsum("...hqk,...khd->...qhd", dropped, v)

  ours = lambda q, k, v: dot_product_attention(q, k, v, dropout_rng=jax.random.clone(key), dropout_rate=0.3)
  # Bitwise by construction: both eager (jax.checkpoint evaluates its jaxpr op by op outside jit), the same
  # weights, where(mask, w * scale, 0) with the same mask and scale, the same einsum (not if one is jitted).
  assert_trees_equal(ours(q, k, v), stored(q, k, v))
  weights = jnp.cos(jnp.arange(B * L * H * D, dtype=jnp.float32).reshape(B, L, H, D))
  grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * weights), argnums=(0, 1, 2))(q, k, v)
  assert_trees_close(grad(ours), grad(stored), rtol=1e-6, atol=1e-7)


def test_traced_rate_sweeps_and_grouped_query_heads():
  q, k, v = qkv(11)
  rates = jnp.array([0.0, 0.5, 0.9])
  dropped = jax.vmap(lambda r: probe_fraction(r))(rates)
  np.testing.assert_allclose(dropped, rates, atol=0.05)
  grouped_kv = [a[..., :2, :] for a in (k, v)]  # 4 query heads over 2 key/value heads
  out = dot_product_attention(q, *grouped_kv)
  repeated = [jnp.repeat(a, 2, axis=-2) for a in grouped_kv]
  assert_trees_close(out, nn.dot_product_attention(q, *repeated), rtol=1e-6, atol=1e-6)


def probe_fraction(rate):
  zeros = jnp.zeros((2, 64, 2, 4))
  value = jnp.ones((2, 64, 2, 1))
  out = dot_product_attention(zeros, zeros, value, dropout_rng=jax.random.key(12), dropout_rate=rate,
                              broadcast_dropout=False)
  return 1 - out.mean() * (1 - rate)


def test_errors_name_the_argument():
  q, k, v = qkv(13)
  with pytest.raises(ValueError, match="dropout_rate must be in"):
    dot_product_attention(q, k, v, dropout_rate=1.5)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    dot_product_attention(q, k, v, dropout_rate=0.1)
  with pytest.raises(ValueError, match="must be given together"):
    dot_product_attention(q, k, v, qk_attn_weights_einsum=jnp.einsum)
  # deterministic=True takes the rate-0 path itself (no dropout is applied): the same ops.
  assert_trees_equal(dot_product_attention(q, k, v, dropout_rate=0.1, deterministic=True),
                     dot_product_attention(q, k, v))


def test_a_train_step_keeps_no_attention_mask():
  b, length, heads, depth = 2, 96, 4, 16
  x = jax.random.normal(jax.random.key(14), (b, length, heads * depth))

  def temp_bytes(attention_fn, rate, broadcast):
    layer = nn.MultiHeadDotProductAttention(num_heads=heads, dropout_rate=rate, broadcast_dropout=broadcast,
                                            attention_fn=attention_fn)
    variables = layer.init(jax.random.key(15), x, deterministic=True)
    loss = lambda p, key: jnp.mean(layer.apply(p, x, deterministic=False, rngs={"dropout": key}) ** 2)
    return jax.jit(jax.grad(loss)).lower(variables, jax.random.key(16)).compile().memory_analysis().temp_size_in_bytes

  for broadcast in (False, True):
    without = temp_bytes(nn.dot_product_attention, 0.0, broadcast)
    ours = temp_bytes(dot_product_attention, 0.1, broadcast)
    flax = temp_bytes(nn.dot_product_attention, 0.1, broadcast)
    assert ours <= 1.10 * without and ours < flax, (broadcast, without, ours, flax)


def test_the_key_hint_names_dropout_rng_and_deterministic():
  q, k, v = qkv(17)
  with pytest.raises(ValueError) as info:
    dot_product_attention(q, k, v, dropout_rate=0.1, deterministic=False)
  message = str(info.value)
  assert "got dropout_rng=None" in message, message
  assert "jaxdrop.attention.dot_product_attention(..., dropout_rng=jax.random.key(0))" in message, message
  assert "dot_product_attention(jax.random.key(0)" not in message  # its first argument is query
  assert "For evaluation, pass deterministic=True." in message
  with pytest.raises(TypeError, match=r"dot_product_attention expects a PRNG key \(dropout_rng=\)"):
    dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=0)
  with pytest.raises(ValueError, match=r"takes one PRNG key \(dropout_rng=\), got a batch of shape \(2,\)"):
    dot_product_attention(q, k, v, dropout_rate=0.1, dropout_rng=jax.random.split(jax.random.key(18), 2))
