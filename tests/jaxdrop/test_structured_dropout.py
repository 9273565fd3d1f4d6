"""Structured dropout (issue 22, item 4): token/patch dropout (timm's PatchDropout), embedding (word) dropout
(Gal & Ghahramani, 2016; AWD-LSTM's embedded_dropout), SpecAugment's masks (torchaudio's mask_along_axis and
mask_along_axis_iid) and dropout for LoRA adapters (peft's lora_dropout), with their linen and NNX faces."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import _bits
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from jaxdrop._embedding_dropout import gathered_dropout_stored
from jaxdrop._masked import lane_threshold
from jaxdrop._patch_dropout import patch_dropout_keep_count
from jaxdrop._spec_augment import spec_mask_uniforms
from tests._asserts import assert_close_ulp, assert_trees_equal, vjp_residuals

SIGMAS = 5.0


def key(seed=0):
  return jax.random.key(seed)  # a fresh key object each call: the same seed twice is no key reuse


def normal(seed, shape):
  """Standard normal test data (from NumPy: no threefry program to compile for each shape)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


# --- token / patch dropout -------------------------------------------------------------------------------


def timm_patch_dropout(x, words, prob, num_prefix_tokens, ordered):
  """timm's patch_dropout_forward (timm/layers/patch_dropout.py) in NumPy, with the words in place of
  argsort(randn): the kept tokens are the num_keep largest words, largest first (a stable sort of -words)."""
  x = np.asarray(x)
  prefix, x = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
  num_keep = max(1, int(x.shape[1] * (1.0 - prob)))
  keep = np.argsort(-np.asarray(words, np.int64), axis=-1, kind="stable")[:, :num_keep]
  if ordered:
    keep = np.sort(keep, axis=-1)
  out = np.take_along_axis(x, keep.reshape(keep.shape + (1,) * (x.ndim - 2)), axis=1)
  return np.concatenate([prefix, out], axis=1), keep


@pytest.mark.parametrize(("prefix", "ordered", "rate"), [(1, False, 0.25), (2, True, 0.7)])
def test_patch_dropout_is_timms_formula_given_the_words(prefix, ordered, rate):
  x = normal(1, (3, prefix + 10, 2, 4))
  f = lambda v: jaxdrop.patch_dropout(key(2), v, rate, num_prefix_tokens=prefix, ordered=ordered,
                                      return_indices=True)
  y, kept = jax.jit(f)(x)
  words = _bits.random_words(_bits.derive_seed(key(2)), (3, 10))  # the words of the docstring
  expected, expected_kept = timm_patch_dropout(x, words, rate, prefix, ordered)
  np.testing.assert_array_equal(kept, expected_kept)
  np.testing.assert_array_equal(y, expected)  # a gather: the tokens themselves
  assert y.shape == (3, prefix + patch_dropout_keep_count(10, rate), 2, 4)
  assert all(len(set(row)) == len(row) for row in np.asarray(kept))  # no token twice
  if ordered:
    assert np.all(np.diff(np.asarray(kept), axis=1) > 0)


def test_patch_dropout_keep_count_is_timms_in_python_floats():
  # int(10 * 0.3000...04) == 3 and int(10 * (1 - 0.1)) == 9: the float products timm rounds down
  cases = {(196, 0.5): 98, (10, 0.7): 3, (10, 0.1): 9, (10, 0.99): 1, (1, 0.5): 1, (7, 0.0): 7}
  for (length, rate), count in cases.items():
    assert patch_dropout_keep_count(length, rate) == max(1, int(length * (1 - rate))) == count
  y = jax.jit(lambda x: jaxdrop.patch_dropout(key(3), x, 0.7))(jnp.ones((2, 11, 3)))
  assert y.shape == (2, 1 + 3, 3)  # static under jit


def test_patch_dropout_keeps_each_patch_with_probability_num_keep_over_length():
  batch, length = 4000, 16
  _, kept = jaxdrop.patch_dropout(key(4), jnp.ones((batch, length, 1)), 0.25, num_prefix_tokens=0,
                                  return_indices=True)
  counts = np.bincount(np.asarray(kept).ravel(), minlength=length) / batch
  p = 12 / 16
  assert np.all(np.abs(counts - p) < SIGMAS * math.sqrt(p * (1 - p) / batch))
  first = np.bincount(np.asarray(kept)[:, 0], minlength=length) / batch  # the random order: uniform too
  assert np.all(np.abs(first - 1 / 16) < SIGMAS * math.sqrt(1 / 16 * 15 / 16 / batch))


def test_patch_dropout_same_key_same_subset_and_rate_zero_is_the_identity():
  x = normal(5, (4, 9, 3))
  a, b = jaxdrop.patch_dropout(key(6), x, 0.5), jaxdrop.patch_dropout(key(6), x, 0.5)
  assert_trees_equal(a, b)  # the same program twice
  assert not np.array_equal(a, jaxdrop.patch_dropout(key(7), x, 0.5))
  same, every = jaxdrop.patch_dropout(None, x, 0.0, return_indices=True)
  assert same is x
  np.testing.assert_array_equal(every, np.broadcast_to(np.arange(8), (4, 8)))


def test_patch_dropout_gradient_reaches_the_kept_tokens_only():
  x = normal(8, (2, 7, 3))
  w = normal(9, (2, 4, 3))  # 1 prefix + max(1, int(6 * 0.5)) = 3 patches
  f = lambda v: jaxdrop.patch_dropout(key(10), v, 0.5, return_indices=True)
  g, kept = jax.jit(jax.grad(lambda v: (jnp.sum(f(v)[0] * w), f(v)[1]), has_aux=True))(x)
  g = np.asarray(g)
  expected = np.zeros((2, 7, 3), np.float32)
  expected[:, 0] = np.asarray(w)[:, 0]
  for b in range(2):
    expected[b, 1 + np.asarray(kept)[b]] = np.asarray(w)[b, 1:]
  np.testing.assert_array_equal(g, expected)  # a scatter of w: exact
  assert [r.dtype for r in vjp_residuals(lambda v: f(v)[0], x)] == [jnp.int32]  # the indices, no mask


def test_patch_dropout_bad_inputs_say_what_to_fix():
  x = jnp.ones((2, 5, 3))
  with pytest.raises(ValueError, match="needs a concrete rate"):
    jax.jit(lambda r: jaxdrop.patch_dropout(key(11), x, r))(jnp.float32(0.5))
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
    jaxdrop.patch_dropout(key(12), x, 1.0)
  with pytest.raises(ValueError, match="num_prefix_tokens=5 leaves no patch tokens"):
    jaxdrop.patch_dropout(key(13), x, 0.5, num_prefix_tokens=5)
  with pytest.raises(ValueError, match="num_prefix_tokens must be an int >= 0"):
    jaxdrop.patch_dropout(key(14), x, 0.5, num_prefix_tokens=-1)
  with pytest.raises(ValueError, match=r"shape \(batch, tokens, ...\)"):
    jaxdrop.patch_dropout(key(15), jnp.ones(5), 0.5)
  with pytest.raises(TypeError, match="ordered must be True or False"):
    jaxdrop.patch_dropout(key(16), x, 0.5, ordered=1)
  with pytest.raises(ValueError, match="got key=None"):
    jaxdrop.patch_dropout(None, x, 0.5)


# --- embedding (word) dropout ----------------------------------------------------------------------------

TABLE = normal(20, (50, 6))
IDS = jnp.asarray(np.random.default_rng(21).integers(0, 50, (3, 40)), jnp.int32)


def awd_lstm_reference(table, ids, mask, rate):
  """AWD-LSTM's embedded_dropout (embed_regularize.py) in NumPy, given its (vocab,) Bernoulli mask:
  mask / (1 - dropout) times the weight, then the lookup."""
  scale = np.float32(1 / (1 - rate))
  masked_weight = np.where(np.asarray(mask)[:, None], np.asarray(table) * scale, np.float32(0))
  return masked_weight[np.asarray(ids)]


@pytest.mark.parametrize("bits", [8, 16])
def test_embedding_dropout_is_awd_lstms_embedded_dropout_given_the_mask(bits):
  rate = 0.4
  y = jaxdrop.embedding_dropout(key(22), TABLE, IDS, rate, mask_bits=bits)
  threshold = lane_threshold(jaxdrop.keep_probability(rate, mask_bits=bits), bits)
  mask = _bits.bernoulli_lanes(_bits.derive_seed(key(22)), (50,), threshold, bits)  # the module's mask
  keep = jaxdrop.keep_probability(rate, mask_bits=bits)
  np.testing.assert_array_equal(y, awd_lstm_reference(TABLE, IDS, mask, 1 - keep))
  assert 0 < int(mask.sum()) < 50


@pytest.mark.parametrize("per_sequence", [False, True])
def test_the_gather_path_equals_the_matrix_path_bitwise(per_sequence):
  # Equal by construction: element v of the (vocab,) mask (b, v of (batch, vocab)) is the same lane of the
  # same stream in both, and a kept row is row * scale in float32 in both; only where the gather happens
  # differs, and a gather moves values without touching them.
  y = jaxdrop.embedding_dropout(key(23), TABLE, IDS, 0.5, per_sequence=per_sequence)
  if per_sequence:
    tables = jaxdrop.embedding_matrix_dropout(key(23), TABLE, 0.5, batch_size=3)
    looked_up = jnp.stack([tables[b][IDS[b]] for b in range(3)])
  else:
    looked_up = jaxdrop.embedding_matrix_dropout(key(23), TABLE, 0.5)[IDS]
  assert_trees_equal(y, looked_up)


def test_a_dropped_word_is_zero_at_every_occurrence():
  y = np.asarray(jaxdrop.embedding_dropout(key(24), TABLE, IDS, 0.5))
  ids = np.asarray(IDS)
  dropped = (y == 0).all(axis=-1)
  for word in np.unique(ids):
    assert len(set(dropped[ids == word])) == 1  # the whole batch shares the mask
  np.testing.assert_array_equal(y[~dropped], np.asarray(TABLE)[ids[~dropped]] * np.float32(2))
  per_seq = np.asarray(jaxdrop.embedding_dropout(key(24), TABLE, IDS, 0.5, per_sequence=True))
  kept = ~(per_seq == 0).all(axis=-1)
  for b in range(3):
    for word in np.unique(ids[b]):
      assert len(set(kept[b][ids[b] == word])) == 1  # within a sequence, the same for every occurrence
  masks = [{int(w): bool(k) for w, k in zip(ids[b], kept[b], strict=True)} for b in range(3)]
  shared = set(masks[0]) & set(masks[1])
  assert any(masks[0][w] != masks[1][w] for w in shared)  # sequences have their own masks


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_embedding_dropout_drops_each_word_with_probability_rate(rate):
  vocab = 1 << 16
  table = jnp.ones((vocab, 1))
  dropped = float(jnp.mean(jaxdrop.embedding_matrix_dropout(key(25), table, rate) == 0))
  assert abs(dropped - rate) < SIGMAS * math.sqrt(rate * (1 - rate) / vocab) + 2.0**-17


def test_embedding_dropout_backward_keeps_the_seed_and_the_ids_not_the_mask():
  weight = jnp.cos(jnp.arange(3 * 40 * 6.0)).reshape(3, 40, 6)
  loss = lambda f: (lambda t: jnp.sum(f(t) * weight))
  gather = lambda t: jaxdrop.embedding_dropout(key(26), t, IDS, 0.5)
  grad = jax.jit(jax.grad(loss(gather)))(TABLE)
  seed, threshold = _bits.derive_seed(key(26)), jnp.uint32(lane_threshold(0.5, 16))
  stored = lambda t: gathered_dropout_stored(seed, jnp.take(t, IDS, axis=0), threshold, jnp.float32(2.0),
                                             None, IDS, vocab=50, bits=16, per_sequence=False)
  # Both where(mask[ids], g * 2, 0), scattered into the table: equal by construction.
  assert_trees_equal(grad, jax.jit(jax.grad(loss(stored)))(TABLE))
  matrix = jax.jit(jax.grad(loss(lambda t: jaxdrop.embedding_matrix_dropout(key(26), t, 0.5)[IDS])))(TABLE)
  assert_close_ulp(grad, matrix, scale="max")  # sums of scaled terms vs the scale of a sum
  kept = vjp_residuals(gather, TABLE)
  assert not any(r.dtype == jnp.bool_ for r in kept)
  assert all(r.dtype in (jnp.int32, jnp.uint32) or r.size == 1 for r in kept)  # ids, seed, threshold, scale
  assert all(r.dtype == jnp.uint32 or r.size == 1 for r in vjp_residuals(
      lambda t: jaxdrop.embedding_matrix_dropout(key(27), t, 0.5), TABLE))


def test_embedding_dropout_traced_rate_jit_and_forward_mode():
  f = jax.jit(lambda t, r: jaxdrop.embedding_dropout(key(28), t, IDS, r))
  assert_close_ulp(f(TABLE, jnp.float32(0.5)), jaxdrop.embedding_dropout(key(28), TABLE, IDS, 0.5))
  assert np.isnan(np.asarray(f(TABLE, jnp.float32(1.5)))).all()
  g = lambda t: jaxdrop.embedding_dropout(key(29), t, IDS, 0.5)
  primal, tangent = jax.jit(lambda t: jax.jvp(g, (t,), (t,)))(TABLE)
  assert_trees_equal(tangent, primal)  # linear: the tangent is the same select of the same rows


def test_embedding_dropout_bad_inputs_say_what_to_fix():
  with pytest.raises(TypeError, match="ids must be an integer array"):
    jaxdrop.embedding_dropout(key(30), TABLE, IDS.astype(jnp.float32), 0.5)
  with pytest.raises(ValueError, match=r"ids must be in \[0, 50\).*from 0 to 50"):
    jaxdrop.embedding_dropout(key(31), TABLE, jnp.array([0, 50]), 0.5)
  with pytest.raises(ValueError, match=r"embedding must be a \(vocab, features\) table"):
    jaxdrop.embedding_dropout(key(32), TABLE[0], IDS, 0.5)
  with pytest.raises(ValueError, match="per_sequence=True needs ids with a batch axis"):
    jaxdrop.embedding_dropout(key(33), TABLE, jnp.array(3), 0.5, per_sequence=True)
  with pytest.raises(ValueError, match="batch_size must be None or a positive int"):
    jaxdrop.embedding_matrix_dropout(key(34), TABLE, 0.5, batch_size=0)
  with pytest.raises(ValueError, match="rate must be in"):
    jaxdrop.embedding_dropout(key(35), TABLE, IDS, 1.5)
  np.testing.assert_array_equal(jaxdrop.embedding_dropout(None, TABLE, IDS, 0.0), TABLE[IDS])


# --- SpecAugment's masks ---------------------------------------------------------------------------------


def torchaudio_mask(specgram, uniforms, mask_param, mask_value, axis, p, iid):
  """torchaudio.functional.mask_along_axis_iid (iid) and mask_along_axis in NumPy float32, given the draws
  (value = rand * mask_param, min_value = rand * (size - value), [long(min), long(min) + long(value)))."""
  x = np.array(specgram)
  size = x.shape[axis]
  if p != 1.0:  # _get_mask_param
    mask_param = min(mask_param, int(size * p))
  if mask_param < 1:
    return x
  u = np.asarray(uniforms, np.float32)
  value = u[0] * np.float32(mask_param)
  min_value = u[1] * (np.float32(size) - value)
  start = min_value.astype(np.int64)  # .long(): toward zero
  end = start + value.astype(np.int64)
  mask = np.arange(size)
  lead = x.ndim - 2 if iid else 0
  start, end = (np.reshape(b, np.shape(b) + (1,) * (x.ndim - lead)) for b in (start, end))
  shape = [1] * x.ndim
  shape[axis] = size
  mask = mask.reshape(shape)
  x[np.broadcast_to((mask >= start) & (mask < end), x.shape)] = mask_value
  return x


MASKS = {  # (the call, its axis, mask_param, p, iid) for torchaudio's transform or function
    # mask_param 12 > 8 frequencies: negative starts, which torch's .long() truncates toward zero
    "FrequencyMasking iid": (lambda k, x: jaxdrop.frequency_mask(k, x, 12, iid_masks=True, mask_value=-1.5),
                             -2, 12, 1.0, True),
    "TimeMasking p=0.3": (lambda k, x: jaxdrop.time_mask(k, x, 10, p=0.3, mask_value=-1.5),
                          -1, 10, 0.3, False),
    "mask_along_axis_iid axis 3": (
        lambda k, x: jaxdrop.mask_along_axis(k, x, 10, 3, mask_value=-1.5, iid=True), 3, 10, 1.0, True),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_masks_are_torchaudios_given_the_same_uniforms(name):
  call, axis, mask_param, p, iid = MASKS[name]
  spec = normal(40, (16, 2, 8, 20))
  y = jax.jit(lambda x: call(key(41), x))(spec)
  uniforms = jax.jit(lambda: spec_mask_uniforms(key(41), (16, 2) if iid else ()))()  # the module's draws
  np.testing.assert_array_equal(y, torchaudio_mask(spec, uniforms, mask_param, -1.5, axis % 4, p, iid))
  assert not np.array_equal(y, spec)


def test_mask_widths_follow_the_uniform_draw():
  batch, mask_param = 4096, 10
  y = jaxdrop.time_mask(key(45), jnp.ones((batch, 1, 2, 30)), mask_param, iid_masks=True)
  widths = np.asarray((y == 0).all(axis=2).sum(axis=-1)).ravel()  # whole columns: mask_param <= 30
  np.testing.assert_array_equal((y == 0).sum(axis=(1, 2, 3)), 2 * widths)
  mean, sd = (mask_param - 1) / 2, math.sqrt((mask_param**2 - 1) / 12)  # trunc(u * 10): uniform on 0..9
  assert abs(widths.mean() - mean) < SIGMAS * sd / math.sqrt(batch)
  assert widths.max() == mask_param - 1
  capped = jaxdrop.time_mask(key(46), jnp.ones((batch, 1, 2, 30)), 20, iid_masks=True, p=0.2)
  assert int((capped == 0).all(axis=2).sum(axis=-1).max()) == 5  # min(20, int(30 * 0.2)) - 1


def test_iid_masks_differ_per_example_and_shared_masks_do_not():
  spec = jnp.ones((8, 1, 6, 30))
  shared = np.asarray(jaxdrop.time_mask(key(47), spec, 10))
  assert (shared == shared[:1]).all()
  iid = np.asarray(jaxdrop.time_mask(key(47), spec, 10, iid_masks=True))
  assert len({row.tobytes() for row in iid}) > 1
  assert_trees_equal(jaxdrop.time_mask(key(48), spec, 10, iid_masks=True), jaxdrop.time_mask(
      key(48), spec, 10, iid_masks=True))  # the same program twice


def test_mask_gradients_and_the_backward_keeps_the_bounds_not_the_mask():
  spec = normal(49, (4, 1, 8, 20))
  f = lambda x, v: jaxdrop.time_mask(key(50), x, 10, iid_masks=True, mask_value=v)
  masked = np.asarray(jax.jit(f)(spec, jnp.float32(0.0)) == 0)
  gx, gv = jax.jit(jax.grad(lambda x, v: jnp.sum(f(x, v)), argnums=(0, 1)))(spec, jnp.float32(0.0))
  np.testing.assert_array_equal(gx, (~masked).astype(np.float32))
  assert float(gv) == masked.sum() > 0  # mask_value is differentiable (SpecAugment's mean fill)
  kept = vjp_residuals(lambda x: f(x, jnp.float32(0.0)), spec)
  assert [(r.shape, r.dtype) for r in kept] == [((4, 1), jnp.int32)] * 2


def test_mask_bad_inputs_say_what_to_fix():
  spec = jnp.ones((2, 8, 20))
  with pytest.raises(ValueError, match="axis must be one of the last two axes"):
    jaxdrop.mask_along_axis(key(51), spec, 4, 0)
  with pytest.raises(ValueError, match=r"iid masks need .* at least 3 dimensions, got 2"):
    jaxdrop.time_mask(key(52), spec[0], 4, iid_masks=True)
  with pytest.raises(ValueError, match="mask_param must be an int >= 0"):
    jaxdrop.time_mask(key(53), spec, 2.5)
  with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]"):
    jaxdrop.time_mask(key(54), spec, 4, p=1.5)
  with pytest.raises(ValueError, match="mask_value must be a scalar"):
    jaxdrop.time_mask(key(55), spec, 4, mask_value=jnp.zeros(2))
  with pytest.raises(ValueError, match="got key=None"):
    jaxdrop.time_mask(None, spec, 4)
  assert jaxdrop.time_mask(None, spec, 0) is spec  # nothing to mask, no key needed
  assert jaxdrop.time_mask(None, spec, 10, p=0.01) is spec  # min(10, int(20 * 0.01)) == 0


# --- the linen and NNX faces -----------------------------------------------------------------------------

TOKENS = normal(60, (2, 9, 4))
SPEC = normal(61, (2, 1, 8, 20))

FACES = {  # (linen layer, NNX layer from rngs, pure function of (key, x)) on the same input
    "PatchDropout": (jdl.PatchDropout(0.5, ordered=True),
                     lambda r: jdx.PatchDropout(0.5, ordered=True, rngs=r),
                     lambda k, x: jaxdrop.patch_dropout(k, x, 0.5, ordered=True), TOKENS),
    "FrequencyMasking": (jdl.FrequencyMasking(4, iid_masks=True),
                         lambda r: jdx.FrequencyMasking(4, iid_masks=True, rngs=r),
                         lambda k, x: jaxdrop.frequency_mask(k, x, 4, iid_masks=True), SPEC),
    "TimeMasking": (jdl.TimeMasking(10, p=0.5), lambda r: jdx.TimeMasking(10, p=0.5, rngs=r),
                    lambda k, x: jaxdrop.time_mask(k, x, 10, p=0.5), SPEC),
}


@pytest.mark.parametrize("name", sorted(FACES))
def test_faces_equal_the_function_for_the_same_key_and_are_the_identity_in_evaluation(name):
  linen_layer, make_nnx, fn, x = FACES[name]
  # Bitwise by construction: each layer calls fn eagerly with the key it is given.
  expected = fn(key(62), x)
  assert_trees_equal(linen_layer.apply({}, x, deterministic=False, rng=key(62)), expected)
  assert_trees_equal(linen_layer.apply({}, x, deterministic=True), x)
  layer = make_nnx(nnx.Rngs(dropout=1))
  assert_trees_equal(layer(x, rngs=key(62)), expected)
  assert not np.array_equal(layer(x), layer(x))  # the stream advances
  layer.eval()
  assert_trees_equal(layer(x), x)


def test_patch_dropout_layers_take_the_rate_at_call_time_and_return_indices():
  layer = jdl.PatchDropout(0.5, return_indices=True)
  y, kept = layer.apply({}, TOKENS, deterministic=False, rng=key(63), rate=0.25)
  assert y.shape == (2, 1 + 6, 4) and kept.shape == (2, 6)
  same, every = layer.apply({}, TOKENS, deterministic=True)
  assert same is TOKENS and every.shape == (2, 8)
  nnx_layer = jdx.PatchDropout(0.5, return_indices=True, rngs=nnx.Rngs(0))
  assert nnx_layer(TOKENS, rate=0.75)[0].shape == (2, 1 + 2, 4)


def test_embedding_layers_are_flax_embed_in_evaluation_and_the_function_in_training():
  ids = IDS[:2, :5]
  layer = jdl.EmbeddingDropout(50, 6, rate=0.3, per_sequence=True)
  variables = layer.init(key(64), ids, deterministic=True)
  table = variables["params"]["embedding"]
  # Bitwise: both gather the same rows of the same table (flax's nn.Embed by jnp.take).
  assert_trees_equal(layer.apply(variables, ids, deterministic=True), nn.Embed(50, 6).apply(variables, ids))
  assert_trees_equal(layer.apply(variables, ids, deterministic=False, rng=key(65), rate=0.6),
                     jaxdrop.embedding_dropout(key(65), table, ids, 0.6, per_sequence=True))
  classic = jdl.EmbeddingDropout(50, 6, rate=0.3, mode="classic")
  assert_trees_equal(classic.apply(variables, ids, deterministic=True),
                     jaxdrop.dropout_eval(table[ids], 0.3, mode="classic"))
  nnx_layer = jdx.EmbeddingDropout(50, 6, rate=0.3, rngs=nnx.Rngs(0))
  reference = nnx.Embed(50, 6, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(nnx_layer.embedding[...], reference.embedding[...])  # the same draw
  assert_trees_equal(nnx_layer(ids, rngs=key(66)),
                     jaxdrop.embedding_dropout(key(66), nnx_layer.embedding[...], ids, 0.3))
  nnx_layer.eval()
  assert_trees_equal(nnx_layer(ids), reference(ids))


# --- dropout for LoRA adapters ---------------------------------------------------------------------------

XL = normal(70, (4, 3))
B_INIT = nnx.initializers.normal(1.0)  # flax's default zero lora_b would hide the adapter


def test_lora_is_peft_lora_dropout_on_flax_lora():
  base = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
  flax_lora = nnx.LoRA(3, 2, 5, base_module=base, b_initializer=B_INIT, rngs=nnx.Rngs(1))
  layer = jdx.LoRA(3, 2, 5, base_module=base, b_initializer=B_INIT, lora_dropout=0.5, rngs=nnx.Rngs(1))
  np.testing.assert_array_equal(layer.lora_a[...], flax_lora.lora_a[...])  # drawn as flax draws them
  np.testing.assert_array_equal(layer.lora_b[...], flax_lora.lora_b[...])
  a, b = layer.lora_a[...], layer.lora_b[...]
  # peft: base_layer(x) + lora_B(lora_A(dropout(x))) * scaling (1 in flax); bitwise: the same ops eagerly.
  assert_trees_equal(layer(XL, rngs=key(71)), jaxdrop.dropout(key(71), XL, 0.5) @ a @ b + base(XL))
  assert not np.array_equal(layer(XL), layer(XL))  # the adapter's dropout stream advances
  assert_trees_equal(layer(XL, rate=0.0), flax_lora(XL))  # rate 0: dropout returns x itself
  layer.eval()
  assert_trees_equal(layer(XL), flax_lora(XL))


def test_only_the_adapter_sees_the_dropout_in_the_gradient():
  base = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
  layer = jdx.LoRA(3, 2, 5, base_module=base, b_initializer=B_INIT, lora_dropout=0.5, rngs=nnx.Rngs(1))
  dropped = jaxdrop.dropout(key(72), XL, 0.5)
  grads = nnx.grad(lambda m: jnp.sum(m(XL, rngs=key(72))))(layer)
  ones = jnp.ones((4, 5))
  assert_close_ulp(grads["lora_a"][...], dropped.T @ (ones @ layer.lora_b[...].T), scale="max")
  assert_close_ulp(grads["base_module"]["kernel"][...], XL.T @ ones, scale="max")  # the undropped input


def test_lora_linear_is_flax_lora_linear_plus_the_adapter_dropout():
  flax_layer = nnx.LoRALinear(3, 5, lora_rank=2, b_initializer=B_INIT, rngs=nnx.Rngs(0))
  layer = jdx.LoRALinear(3, 5, lora_rank=2, b_initializer=B_INIT, lora_dropout=0.3, rngs=nnx.Rngs(0))
  assert_trees_equal(nnx.state(layer, nnx.Param), nnx.state(flax_layer, nnx.Param))
  expected = XL @ layer.kernel[...] + layer.bias[...][None] + (
      jaxdrop.dropout(key(73), XL, 0.3) @ layer.lora.lora_a[...] @ layer.lora.lora_b[...])
  assert_close_ulp(layer(XL, rngs=key(73)), expected, scale="max")  # flax's Linear is a dot_general
  layer.eval()
  assert_trees_equal(layer(XL), flax_layer(XL))  # the same calls without dropout


def test_lora_without_a_dropout_stream_asks_for_one_only_when_it_drops():
  layer = jdx.LoRA(3, 2, 5, lora_dropout=0.1, rngs=nnx.Rngs(params=0))
  with pytest.raises(ValueError, match=r"no random stream: construct it with rngs=nnx.Rngs\(dropout=0\)"):
    layer(XL)
  assert layer(XL, rngs=key(74)).shape == (4, 5)
  assert jdx.LoRA(3, 2, 5, rngs=nnx.Rngs(params=0))(XL).shape == (4, 5)  # lora_dropout=0: no key needed
