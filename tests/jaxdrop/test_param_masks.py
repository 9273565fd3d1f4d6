"""The default mask on real Flax trees (linen, nn.scan stacks, NNX, nnx.vmap stacks), selectors and groups."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxdrop
from jaxdrop._param_masks import weights_only


def decayed_paths(tree, mask=None):
  """The '/'-joined paths of the leaves ``mask`` selects."""
  flags = jaxdrop.resolve_mask(tree, mask)
  paths = jax.tree_util.tree_leaves_with_path(flags)
  return sorted("/".join(jaxdrop.param_names(p)) for p, flag in paths if flag)


class Transformerish(nn.Module):
  @nn.compact
  def __call__(self, tokens, train=False):
    x = nn.Embed(10, 8)(tokens)
    x = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=2)(x)
    x = nn.Conv(8, (3,))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(3)(x)


def test_linen_tree_decays_kernels_and_embeddings_only():
  variables = Transformerish().init(jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
  assert decayed_paths(variables) == [
      "params/Conv_0/kernel",
      "params/Dense_0/kernel",
      "params/Embed_0/embedding",
      "params/MultiHeadDotProductAttention_0/key/kernel",
      "params/MultiHeadDotProductAttention_0/out/kernel",
      "params/MultiHeadDotProductAttention_0/query/kernel",
      "params/MultiHeadDotProductAttention_0/value/kernel",
  ]
  # attention's biases are (heads, head_dim): 2-D, and still not decayed
  assert variables["params"]["MultiHeadDotProductAttention_0"]["query"]["bias"].ndim == 2


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    x = nn.LayerNorm()(x)
    x = nn.BatchNorm(use_running_average=False)(x)
    return nn.Dense(4)(x), None


def test_nn_scan_stacks_keep_biases_scales_and_statistics_undecayed():
  stack = nn.scan(Block, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True}, length=3)
  variables = stack().init(jax.random.key(1), jnp.ones((2, 4)), None)
  leaves = {"/".join(jaxdrop.param_names(p)): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  assert leaves["params/Dense_0/bias"].shape == leaves["params/LayerNorm_0/scale"].shape == (3, 4)  # stacked
  assert leaves["batch_stats/BatchNorm_0/mean"].shape == (3, 4)
  assert decayed_paths(variables) == ["params/Dense_0/kernel"]


class NNXModel(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(10, 4, rngs=rngs)
    self.norm = nnx.LayerNorm(4, rngs=rngs)
    self.batch_norm = nnx.BatchNorm(4, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=4, decode=False, rngs=rngs)
    self.linear = nnx.Linear(4, 2, rngs=rngs)


def test_nnx_state_and_nnx_optimizer():
  model = NNXModel(nnx.Rngs(0))
  assert decayed_paths(nnx.state(model)) == [
      "attention/key/kernel", "attention/out/kernel", "attention/query/kernel", "attention/value/kernel",
      "embed/embedding", "linear/kernel",
  ]
  params = nnx.state(model, nnx.Param)
  before = jax.tree.map(jnp.copy, params)
  optimizer = nnx.Optimizer(model, jaxdrop.adamw(0.1, weight_decay=0.5), wrt=nnx.Param)
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int32 count with floats
    optimizer.update(model, jax.tree.map(jnp.zeros_like, params))  # zero gradients: only the decay acts
  after = nnx.state(model, nnx.Param)
  np.testing.assert_allclose(after["linear"]["kernel"][...], before["linear"]["kernel"][...] * (1 - 0.1 * 0.5),
                             rtol=1e-6)
  # Exact: not decayed, and Adam's step on a zero gradient is -0.1 * 0 / (0 + eps) = -0.
  np.testing.assert_array_equal(after["linear"]["bias"][...], before["linear"]["bias"][...])
  np.testing.assert_array_equal(after["norm"]["scale"][...], before["norm"]["scale"][...])


def test_nnx_vmap_stacks():
  @nnx.vmap(in_axes=0, out_axes=0)
  def create(rngs):
    return nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.LayerNorm(4, rngs=rngs))

  state = nnx.state(create(nnx.Rngs(0).split(3)))
  shapes = {"/".join(jaxdrop.param_names(p)): leaf.shape for p, leaf in jax.tree_util.tree_leaves_with_path(state)}
  assert shapes == {"layers/0/bias": (3, 4), "layers/0/kernel": (3, 4, 4), "layers/1/bias": (3, 4),
                    "layers/1/scale": (3, 4)}
  assert decayed_paths(state) == ["layers/0/kernel"]


def test_plain_dicts_and_equinox_like_names_fall_back_on_rank():
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "layer_norm": {"weight": jnp.ones(2)},
            "linear": {"weight": jnp.ones((2, 2)), "bias": jnp.ones((2, 2))}}
  assert decayed_paths(params) == ["linear/weight", "w"]


def test_masked_nodes_from_optax_masked_are_left_alone():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2), "frozen": {"kernel": jnp.ones((2, 2))}}
  trainable = {"kernel": True, "bias": True, "frozen": {"kernel": False}}
  tx = optax.masked(jaxdrop.sgd(0.1, weight_decay=0.5), trainable)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["kernel"], 0.95)
  np.testing.assert_array_equal(new["bias"], 1.0)  # exact: not decayed, a zero gradient
  np.testing.assert_array_equal(new["frozen"]["kernel"], 1.0)
  masked = {"kernel": jnp.ones((2, 2)), "bias": optax.MaskedNode()}
  assert jaxdrop.resolve_mask(masked) == {"kernel": True, "bias": optax.MaskedNode()}


def test_decay_mask_selectors():
  params = {"encoder": {"pos_embedding": jnp.ones((1, 4, 8)), "kernel": jnp.ones((8, 8))},
            "head": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)}}
  assert decayed_paths(params, jaxdrop.decay_mask(exclude=("pos_embedding",))) == ["encoder/kernel", "head/kernel"]
  assert decayed_paths(params, jaxdrop.decay_mask(exclude=(re.compile(r"^head/"),))) == [
      "encoder/kernel", "encoder/pos_embedding"]
  assert decayed_paths(params, jaxdrop.decay_mask(include=("bias",), exclude=("encoder",))) == [
      "head/bias", "head/kernel"]
  big = lambda path, leaf: leaf.size > 16
  assert decayed_paths(params, jaxdrop.decay_mask(exclude=(big,))) == ["head/kernel"]
  with pytest.raises(TypeError, match="a sequence of selectors"):
    jaxdrop.decay_mask(exclude="pos_embedding")
  with pytest.raises(TypeError, match="names .str., compiled regular expressions"):
    jaxdrop.decay_mask(exclude=(3,))


def test_penalties_and_max_norm_use_the_same_default():
  variables = Transformerish().init(jax.random.key(2), jnp.zeros((2, 5), jnp.int32))
  params = variables["params"]
  expected = sum(float(jnp.sum(leaf**2)) / 2 for p, leaf in jax.tree_util.tree_leaves_with_path(params)
                 if weights_only(p, leaf))
  np.testing.assert_allclose(float(jaxdrop.l2_penalty(params)), expected, rtol=1e-5)
  projected = jaxdrop.max_norm_projection(params, 1e-3)
  mha = params["MultiHeadDotProductAttention_0"]
  # Exact: biases are not projected.
  np.testing.assert_array_equal(projected["MultiHeadDotProductAttention_0"]["query"]["bias"], mha["query"]["bias"])
  assert not np.array_equal(projected["Dense_0"]["kernel"], params["Dense_0"]["kernel"])


def test_groups_give_each_leaf_the_first_matching_rate():
  params = {"pos_embedding": jnp.ones((1, 4, 2)), "head": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
            "body": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = jaxdrop.add_weight_decay(0.1, groups=[("pos_embedding", 0.0), (re.compile("^head/"), 0.5),
                                             ("head", 0.9)])
  updates, _ = tx.update(zeros, tx.init(params), params)
  rates = {"/".join(jaxdrop.param_names(p)): float(u.reshape(-1)[0])
           for p, u in jax.tree_util.tree_leaves_with_path(updates)}
  assert rates == pytest.approx({"pos_embedding": 0.0, "head/kernel": 0.5, "head/bias": 0.5, "body/kernel": 0.1,
                                 "body/bias": 0.0})
  # AdamW with groups is optax.adamw's chain with the grouped decay: equal where the rates agree.
  for grouped, plain in ((jaxdrop.adamw(0.1, weight_decay=0.1, groups={"pos_embedding": 0.1}),
                          jaxdrop.adamw(0.1, weight_decay=0.1, mask=jaxdrop.decay_mask(include=("pos_embedding",)))),
                         (jaxdrop.sgd(0.1, momentum=0.9, weight_decay=0.1, groups={"head": 0.1}),
                          jaxdrop.sgd(0.1, momentum=0.9, weight_decay=0.1, mask=jaxdrop.decay_mask(include=("head",))))):
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.3), params)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int32 count with floats
      a, _ = grouped.update(grads, grouped.init(params), params)
      b, _ = plain.update(grads, plain.init(params), params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)
  with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
    jaxdrop.add_weight_decay(0.1, groups={"head": -1.0})
  with pytest.raises(TypeError, match="groups takes"):
    jaxdrop.add_weight_decay(0.1, groups=["head"])


def test_a_callable_pytree_of_bools_is_a_mask_not_a_predicate():
  import dataclasses

  @jax.tree_util.register_dataclass
  @dataclasses.dataclass
  class Module:  # as an Equinox module: a pytree that can also be called
    kernel: bool
    bias: bool

    def __call__(self, x):
      return x

  params = Module(kernel=jnp.ones((2, 2)), bias=jnp.ones(2))
  flags = jaxdrop.resolve_mask(params, Module(kernel=False, bias=True))
  assert (flags.kernel, flags.bias) == (False, True)
  tx = jaxdrop.add_weight_decay(0.1, mask=Module(kernel=False, bias=True))
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_array_equal(updates.kernel, 0.0)  # exact: masked out, a zero gradient
  np.testing.assert_allclose(updates.bias, 0.1)


@pytest.mark.parametrize("leaf", ["no", 0.5, None])
def test_a_pytree_mask_leaf_must_be_a_bool(leaf):
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  with pytest.raises((TypeError, ValueError), match="bool|structure"):
    jaxdrop.resolve_mask(params, {"kernel": leaf, "bias": False})
