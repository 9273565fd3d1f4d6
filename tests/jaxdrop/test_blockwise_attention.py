"""Blockwise (flash-style) attention: the reference path's dropout mask exactly, its values and gradients to
float rounding, for any block size; masks, lengths, causal tiles skipped, grouped heads, half precision,
fully masked rows, the transformations and the layers' ``implementation``."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdrop import _bits, _flash, attention
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from jaxdrop._masked import keep_for
from jaxdrop.attention import choose_implementation, dot_product_attention
from tests._asserts import assert_close_ulp, assert_same_mask, assert_trees_equal

B, L, H, D = 2, 13, 2, 4  # 13: no block size below divides it
RATE = 0.3


def qkv(seed=0, lq=L, lk=L, heads=H, kv_heads=H, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, lq, heads, D), dtype), jax.random.normal(kk, (B, lk, kv_heads, D), dtype),
          jax.random.normal(kv, (B, lk, kv_heads, D), dtype))


def attend(implementation, q, k, v, *, seed=5, rate=RATE, **kwargs):
  return dot_product_attention(q, k, v, dropout_rate=rate, dropout_rng=jax.random.key(seed),
                               implementation=implementation, **kwargs)


# --- the mask: exact ---


TILE_CASES = [  # (bits, the whole mask's shape, partitioned)
    (16, (2, 2, 1, 13, 11), False),  # the words shared by a tile's lanes hashed once
    (8, (2, 2, 1, 13, 11), False),
    (32, (1, 1, 1, 13, 11), False),  # one mask shared over the batch and heads
    (16, (3, 1, 1, 13, 11), False),  # lanes of a word in other tiles: each element hashes its own word
    (16, (2, 2, 1, 13, 11), True),  # several devices: elementwise
    (8, (1, 1, 1, 13, 11), True),
]


@pytest.mark.parametrize(("bits", "shape", "partitioned"), TILE_CASES)
def test_tiles_regenerate_the_whole_mask_bitwise(bits, shape, partitioned, monkeypatch):
  # Each tile's lanes come from each element's global index: assembled, the tiles are the whole mask, whatever
  # the tile size (also where a tile overhangs the end), on both generator paths, and under vmap (the tiles of
  # one size computed at once, their starts batched).
  monkeypatch.setattr(_bits, "_unpartitioned", lambda: not partitioned)
  jax.clear_caches()
  seed = _bits.derive_seed(jax.random.key(3))
  threshold = keep_for(RATE, bits).threshold
  whole = np.asarray(_bits.bernoulli_lanes(seed, shape, threshold, bits))
  assert 0 < whole.mean() < 1
  lq, lk = shape[-2:]
  for bq, bk in ((4, 5), (16, 3)):
    nq, nk = -(-lq // bq), -(-lk // bk)
    tile_shape = (*shape[:-2], bq, bk)
    i, j = (a.ravel() for a in jnp.meshgrid(jnp.arange(nq), jnp.arange(nk), indexing="ij"))
    tile = functools.partial(lambda i, j, bq, bk, tile_shape: _bits.tile_bernoulli(
        seed, shape, threshold, bits, (0, 0, 0, i * bq, j * bk), tile_shape),
        bq=bq, bk=bk, tile_shape=tile_shape)
    tiles = np.asarray(jax.jit(jax.vmap(tile))(i, j)).reshape(nq, nk, *tile_shape)
    assembled = np.moveaxis(tiles, (0, 1), (-4, -2)).reshape(*shape[:-2], nq * bq, nk * bk)
    np.testing.assert_array_equal(assembled[..., :lq, :lk], whole)
  jax.clear_caches()


def one_hot_values(lk, heads):
  """Values whose weighted sum is the weights: ``value[b, k, h, d] = (k == d)``."""
  return jnp.broadcast_to(jnp.eye(lk, dtype=jnp.float32)[None, :, None, :], (B, lk, heads, lk))


MASK_CASES = [  # (block_q, block_k, broadcast_dropout, is_causal): sizes that divide 13 or not, or exceed it
    (4, 5, True, False), (4, 5, False, True), (1, 13, False, False), (16, 16, False, True),
    (13, 2, True, True),
]


@pytest.mark.parametrize(("block_q", "block_k", "broadcast_dropout", "is_causal"), MASK_CASES)
def test_blockwise_drops_exactly_the_reference_mask(block_q, block_k, broadcast_dropout, is_causal):
  # With one-hot values the output is the dropped weights themselves; zero queries make every allowed weight
  # positive, so an output is 0 exactly where the weight is dropped or not allowed: the zero pattern is the
  # mask, compared exactly, with the mask drawn directly from the key for the reference path's weights shape.
  q = jnp.zeros((B, L, H, D))
  k = jax.random.normal(jax.random.key(1), (B, L, H, D))
  v = one_hot_values(L, H)
  kwargs = dict(broadcast_dropout=broadcast_dropout, is_causal=is_causal)
  tiled = attend("blockwise", q, k, v, block_q=block_q, block_k=block_k, **kwargs)
  ref = attend("reference", q, k, v, **kwargs)
  weights = jnp.moveaxis(tiled, -2, -3)  # (B, H, Lq, Lk)
  mask_shape = (1, 1, L, L) if broadcast_dropout else (B, H, L, L)
  threshold = keep_for(RATE, 16).threshold
  keep = _bits.bernoulli_lanes(_bits.derive_seed(jax.random.key(5)), mask_shape, threshold, 16)
  allowed = jnp.tril(jnp.ones((L, L), bool)) if is_causal else jnp.ones((L, L), bool)
  np.testing.assert_array_equal(weights != 0, jnp.broadcast_to(keep & allowed[None, None], weights.shape))
  assert_same_mask(tiled, ref)
  assert_close_ulp(tiled, ref, ulp=4, scale="max")


# --- values and gradients: float rounding ---


def loss_weights(o):
  return jnp.cos(jnp.arange(o.size, dtype=jnp.float32).reshape(o.shape))


def value_and_grads(implementation, q, k, v, extra=(), **kwargs):
  """The output and the gradients with respect to q, k, v and the ``extra`` keyword arrays (e.g. the bias)."""
  names = tuple(extra)

  def loss(q, k, v, *arrays):
    out = attend(implementation, q, k, v, **dict(zip(names, arrays, strict=True)), **kwargs)
    return jnp.sum(out * loss_weights(out)), out

  argnums = tuple(range(3 + len(names)))
  grads, out = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True))(q, k, v, *extra.values())
  return out, grads


def mask_and_bias():
  mask = jax.random.bernoulli(jax.random.key(8), 0.7, (B, 1, L, L))
  bias = jax.random.normal(jax.random.key(9), (1, H, L, L))
  return mask, bias


CASES = {  # name: (block_q, block_k, qkv keywords, attention keywords, extra differentiated keywords)
    "plain": (4, 5, {}, {}, {}),
    "causal, a mask per head": (16, 3, {}, dict(is_causal=True, broadcast_dropout=False), {}),
    "mask and bias": (4, 5, {}, dict(mask=mask_and_bias()[0], broadcast_dropout=False),
                      dict(bias=mask_and_bias()[1])),
    "lengths, causal": (5, 2, {}, dict(key_value_seq_lengths=jnp.array([9, 13]), is_causal=True), {}),
    "grouped query heads": (3, 4, dict(heads=4, kv_heads=2), dict(broadcast_dropout=False), {}),
    "multi-query, more keys, causal": (4, 5, dict(heads=4, kv_heads=1, lk=19),
                                       dict(broadcast_dropout=False, is_causal=True), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradients_equal_the_reference_to_float_rounding(name):
  block_q, block_k, shapes, kwargs, extra = CASES[name]
  q, k, v = qkv(**shapes)
  ref_out, ref_grads = value_and_grads("reference", q, k, v, extra, **kwargs)
  out, grads = value_and_grads("blockwise", q, k, v, extra, block_q=block_q, block_k=block_k, **kwargs)
  assert_same_mask(out, ref_out)
  assert_close_ulp(out, ref_out, ulp=16, scale="max")
  for g, r in zip(grads, ref_grads, strict=True):
    assert_close_ulp(g, r, ulp=32, scale="max")  # sums over the tiles in another order
  assert all(np.any(np.asarray(g) != 0) for g in grads)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_accumulate_in_float32(dtype):
  q, k, v = qkv(dtype=dtype)
  exact = [x.astype(jnp.float32) for x in (q, k, v)]
  tiled = functools.partial(attend, "blockwise", block_q=4, block_k=5, broadcast_dropout=False)
  out = jax.jit(tiled)(q, k, v)
  assert out.dtype == dtype
  # the same inputs, all in float32
  expected = jax.jit(functools.partial(attend, "reference", broadcast_dropout=False))(*exact)
  # f32 accumulation: the half-precision result is the float32 one rounded, plus the rounding of each
  # probability to the value's dtype before its product (a relative error of eps per term)
  assert_close_ulp(out.astype(jnp.float32), expected.astype(dtype).astype(jnp.float32), ulp=4, scale="max",
                   dtype=dtype)
  grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend("blockwise", q, k, v, block_q=4, block_k=5).astype(
      jnp.float32) ** 2), argnums=(0, 1, 2)))(q, k, v)
  expected_grads = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend("reference", q, k, v) ** 2),
                                    argnums=(0, 1, 2)))(*exact)
  for g, e in zip(grads, expected_grads, strict=True):
    assert g.dtype == dtype
    assert_close_ulp(g.astype(jnp.float32), e.astype(dtype).astype(jnp.float32), ulp=8, scale="max",
                     dtype=dtype)


@pytest.mark.parametrize("implementation", ["reference", "blockwise"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(implementation):
  q, k, v = qkv()
  mask = jnp.ones((B, 1, L, L), bool).at[:, :, 3].set(False)  # row 3 sees no key
  lengths = jnp.array([0, 13])  # the first example sees no key at all

  def loss(q, k, v):
    out = attend(implementation, q, k, v, mask=mask, key_value_seq_lengths=lengths, block_q=4, block_k=5)
    return jnp.sum(out * loss_weights(out)), out

  (dq, dk, dv), out = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  for x in (out, dq, dk, dv):
    assert np.all(np.isfinite(x))
  assert np.all(out[0] == 0) and np.all(out[1, 3] == 0) and np.all(out[1, :3] != 0)
  assert np.all(dq[0] == 0) and np.all(dq[1, 3] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)


# --- tiles that are skipped ---


@pytest.mark.parametrize(("lq", "lk", "block_q", "block_k"), [(13, 13, 4, 5), (13, 13, 5, 2), (8, 20, 3, 4)])
@pytest.mark.parametrize("longest", [None, 7])
def test_the_loops_visit_exactly_the_tiles_with_an_allowed_key(lq, lk, block_q, block_k, longest):
  # Causal, with or without key lengths: the forward loop of query block i and the backward loop of key block
  # j cover exactly the tiles that hold an allowed (query, key) pair (lengths: the longest one's).
  spec = _flash._Spec(lq, lk, block_q, block_k, True, 16, (), (), None)
  nq, nk = -(-lq // block_q), -(-lk // block_k)
  lengths = None if longest is None else jnp.array([[[[[longest]]]]])
  rows, cols = np.arange(nq * block_q)[:, None], np.arange(nk * block_k)[None, :]
  allowed = (cols <= rows) & (rows < lq) & (cols < (lk if longest is None else longest))
  tiles = allowed.reshape(nq, block_q, nk, block_k).any(axis=(1, 3))
  for i in range(nq):
    lo, hi = _flash._key_blocks(spec, i, lengths, nk)
    assert [lo <= j < hi for j in range(nk)] == list(tiles[i])
  for j in range(nk):
    lo, hi = _flash._query_blocks(spec, j, lengths, nq)
    assert [lo <= i < hi for i in range(nq)] == list(tiles[:, j])


@pytest.mark.parametrize(("block_q", "block_k"), [(4, 5), (5, 2), (3, 4), (4, 4), (1, 1), (7, 3)])
def test_the_causal_mask_is_applied_exactly_to_the_tiles_that_cross_the_diagonal(block_q, block_k):
  # A tile needs no causal mask ("whole") exactly when every key of its key block is at or before every row of
  # its query block; the forward loop takes key blocks [0, whole) unmasked, the backward loop query blocks
  # [first whole, end) unmasked.
  spec = _flash._Spec(23, 23, block_q, block_k, True, 16, (), (), None)
  nq, nk = -(-23 // block_q), -(-23 // block_k)
  rows, cols = np.arange(nq * block_q)[:, None], np.arange(nk * block_k)[None, :]
  whole = (cols <= rows).reshape(nq, block_q, nk, block_k).all(axis=(1, 3))
  assert whole.any() and not whole.all()
  for i in range(nq):
    assert [j < _flash._whole_key_blocks(spec, i) for j in range(nk)] == list(whole[i])
  for j in range(nk):
    assert [i >= _flash._first_whole_query_block(spec, j) for i in range(nq)] == list(whole[:, j])

def test_causal_tiles_above_the_diagonal_are_not_computed():
  # A NaN value poisons every computed tile that holds its key (0 * NaN), allowed or not: with the tiles above
  # the diagonal skipped, exactly the query blocks whose tiles reach the last key are NaN; and a NaN
  # cotangent of the first query row reaches exactly the key blocks that the first query block computes.
  q, k, v = qkv()
  bq, bk = 4, 5
  fn = functools.partial(attend, "blockwise", is_causal=True, block_q=bq, block_k=bk)
  out = fn(q, k, v.at[:, L - 1].set(jnp.nan))
  reaches = [(min(L, (i + 1) * bq) - 1) // bk == (L - 1) // bk for i in range(-(-L // bq))]
  rows_nan = np.repeat(reaches, bq)[:L]
  np.testing.assert_array_equal(np.isnan(out).any(axis=(0, 2, 3)), rows_nan)
  assert not rows_nan[: bq * 2].any()
  _, vjp = jax.vjp(lambda k, v: fn(q, k, v), k, v)
  dk, dv = vjp(jnp.zeros(q.shape).at[:, 0].set(jnp.nan))
  first_block_keys = np.arange(L) < bk * ((bq - 1) // bk + 1)
  np.testing.assert_array_equal(np.isnan(dv).any(axis=(0, 2, 3)), first_block_keys)
  np.testing.assert_array_equal(np.isnan(dk).any(axis=(0, 2, 3)), first_block_keys)


# --- transformations ---


def test_vmap_checkpoint_and_scan_agree_with_plain_calls():
  q, k, v = qkv()
  fn = functools.partial(attend, "blockwise", block_q=4, block_k=5, broadcast_dropout=False)
  # vmap over a leading axis with one key: each slice gets the mask of its unbatched call
  stacked = [jnp.stack([x, x[::-1]]) for x in (q, k, v)]
  batched = jax.jit(jax.vmap(fn))(*stacked)
  for n in range(2):
    assert_close_ulp(batched[n], jax.jit(fn)(*(x[n] for x in stacked)), ulp=4, scale="max")

  def layers(q, k, v, remat):  # two layers in a scan, each with its own key (from a traced seed)
    f = jax.checkpoint(fn) if remat else fn

    def layer(carry, seed):
      out = f(carry, k, v, seed=seed)
      return out, jnp.sum(out**2)

    return jnp.sum(jax.lax.scan(layer, q, jnp.arange(2))[1])

  def unrolled(q, k, v):
    total = jnp.zeros(())
    for seed in range(2):
      q = fn(q, k, v, seed=jnp.int32(seed))
      total = total + jnp.sum(q**2)
    return total

  expected = jax.jit(jax.grad(unrolled, argnums=(0, 1, 2)))(q, k, v)
  for remat in (False, True):
    grads = jax.jit(jax.grad(functools.partial(layers, remat=remat), argnums=(0, 1, 2)))(q, k, v)
    assert_close_ulp(grads, expected, ulp=8, scale="max")


# --- the rule, the layers and the errors ---


def test_implementation_none_takes_blockwise_above_the_documented_size():
  assert choose_implementation((2, 512, 8, 64), (2, 512, 8, 64)) == "reference"  # 8 MiB of weights
  assert choose_implementation((2, 1024, 8, 64), (2, 1024, 8, 64)) == "blockwise"  # 32 MiB
  assert choose_implementation((2, 1024, 8, 64), (2, 1024, 8, 64), reference_only="module=") == "reference"
  assert choose_implementation((2, 1024, 8, 64), (2, 1024, 8, 64), implementation="reference") == "reference"
  assert attention.BLOCKWISE_ABOVE == 16 * 2**20


def test_errors_name_the_argument_and_the_fix():
  q, k, v = qkv()
  with pytest.raises(ValueError, match=r"implementation must be None, 'reference' or 'blockwise', got 'fla"):
    attend("flash", q, k, v)
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match=r"block_q must be a positive int"):
      attend("blockwise", q, k, v, block_q=bad)
  with pytest.raises(ValueError, match=r"block_k must be a positive int"):
    attend("blockwise", q, k, v, block_k=0)
  with pytest.raises(ValueError, match=r"does not take module=.*pass implementation='reference'"):
    attend("blockwise", q, k, v, module=nn.Dense(2))
  with pytest.raises(ValueError, match=r"key_value_seq_lengths must be integers"):
    attend("blockwise", q, k, v, key_value_seq_lengths=jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match=r"key_value_seq_lengths must be broadcastable to the batch shape"):
    attend("blockwise", q, k, v, key_value_seq_lengths=jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r"multiple of the key/value heads"):
    attend("blockwise", *qkv(heads=3, kv_heads=2))
  with pytest.raises(ValueError, match=r"implementation= chooses the path of jaxdrop"):
    jdl.MultiHeadDotProductAttention(num_heads=2, attention_fn=nn.dot_product_attention,
                                     implementation="blockwise")


def test_linen_layers_take_implementation_with_flax_params_and_the_same_output():
  x = jax.random.normal(jax.random.key(2), (B, L, 8))
  flax_layer = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=RATE)
  params = flax_layer.init(jax.random.key(3), x, deterministic=True)
  outputs = {}
  for implementation in ("reference", "blockwise"):
    layer = jdl.MultiHeadDotProductAttention(num_heads=2, dropout_rate=RATE, implementation=implementation)
    ours = layer.init(jax.random.key(3), x, deterministic=True)
    assert jax.tree.structure(ours) == jax.tree.structure(params)
    outputs[implementation] = layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  assert_same_mask(outputs["blockwise"], outputs["reference"])
  assert_close_ulp(outputs["blockwise"], outputs["reference"], ulp=16, scale="max")
  layer = jdl.MultiHeadDotProductAttention(num_heads=2, implementation="blockwise")
  assert layer.clone().attention_fn is layer.attention_fn  # clone (and flax's own copies) keep it
  assert layer.clone(implementation="reference").attention_fn.keywords == {"implementation": "reference"}
  assert layer.clone(implementation=None).attention_fn is dot_product_attention
  assert jdl.MultiHeadDotProductAttention(num_heads=2).attention_fn is dot_product_attention
  self_attention = jdl.SelfAttention(num_heads=2, dropout_rate=RATE, implementation="blockwise")
  with pytest.warns(DeprecationWarning, match="SelfAttention"):  # flax's own warning
    y = self_attention.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  assert_close_ulp(y, outputs["reference"], ulp=16, scale="max")  # the same layer, called on (x, x)


def test_nnx_layer_takes_implementation_with_the_same_output():
  x = jax.random.normal(jax.random.key(2), (B, L, 8))
  outputs = {}
  for implementation in ("reference", "blockwise"):
    layer = jdx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=RATE, decode=False,
                                   implementation=implementation, rngs=nnx.Rngs(0, dropout=1))
    assert layer.implementation == implementation
    outputs[implementation] = layer(x, deterministic=False)
  assert_same_mask(outputs["blockwise"], outputs["reference"])
  assert_close_ulp(outputs["blockwise"], outputs["reference"], ulp=16, scale="max")
  flax_layer = nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=nnx.Rngs(0))
  ours = jdx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, implementation="blockwise",
                                rngs=nnx.Rngs(0))
  params = nnx.state(ours, nnx.Param)
  assert jax.tree.structure(params) == jax.tree.structure(nnx.state(flax_layer, nnx.Param))
  assert_trees_equal(nnx.state(ours, nnx.Param), nnx.state(flax_layer, nnx.Param))  # the same init, same rngs
