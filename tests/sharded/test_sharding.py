"""Sharded programs under JAX's default partitioner (Shardy): every function and layer, 1-D and 2-D meshes.

This process has 8 simulated CPU devices (tests/test_sharded_suite.py). Masks depend on the key and each
element's global index only, so generating a mask needs no communication and a mask kernel's sharded call is
bitwise the unsharded one. The Gaussian and concrete noise agree to a few ulp: XLA evaluates the normal
transform (log, erf_inv, sigmoid) by the local shape.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_close_ulp, assert_trees_close, assert_trees_equal

COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(-start)?\(")
SHAPE = (8, 16, 8, 8)  # every axis splits over up to 8 devices
KEY = jax.random.key(0)


def linen_layer(layer):
  return lambda key, x: layer.apply({}, x, deterministic=False, rngs={"dropout": key})


def nnx_layer(layer):
  return lambda key, x: layer(x, rngs=key)


def seven(key):
  """The key as a key of jaxdrop.PHILOX7 (the opt-in 7-round generator's masks)."""
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=jaxdrop.PHILOX7)


# Elementwise in the mask: no collective in the program, bitwise the unsharded values and gradients. By
# construction: an integer mask from the key and each element's global index, then one multiply by the same
# float32 scale (alpha: one multiply-add, contracted alike in both fused programs).
MASKED = {
    "dropout": lambda k, x: jaxdrop.dropout(k, x, 0.3),
    "dropout 8-bit": lambda k, x: jaxdrop.dropout(k, x, 0.3, mask_bits=8),
    "dropout 32-bit": lambda k, x: jaxdrop.dropout(k, x, 0.3, mask_bits=32),
    "dropout classic": lambda k, x: jaxdrop.dropout(k, x, 0.3, mode="classic"),
    "dropout broadcast (1,)": lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(1,)),
    "dropout broadcast (0, 3)": lambda k, x: jaxdrop.dropout(k, x, 0.3, broadcast_dims=(0, 3)),
    "dropout traced rate": lambda k, x: jaxdrop.dropout(k, x, jnp.float32(0.3)),
    "dropout PHILOX7": lambda k, x: jaxdrop.dropout(seven(k), x, 0.3),
    "dropout PHILOX7 8-bit": lambda k, x: jaxdrop.dropout(seven(k), x, 0.3, mask_bits=8),
    "alpha_dropout": lambda k, x: jaxdrop.alpha_dropout(k, x, 0.3),
    "drop_connect": lambda k, x: jaxdrop.drop_connect(k, x, 0.3),
    "drop_path": lambda k, x: jaxdrop.drop_path(k, x, 0.3),
    "drop_path batch_axis=1": lambda k, x: jaxdrop.drop_path(k, x, 0.3, batch_axis=1),
    "linen Dropout": linen_layer(jdl.Dropout(0.3)),
    "linen Dropout PHILOX7": lambda k, x: linen_layer(jdl.Dropout(0.3))(seven(k), x),
    "linen AlphaDropout": linen_layer(jdl.AlphaDropout(0.3)),
    "linen DropPath": linen_layer(jdl.DropPath(0.3)),
    "nnx Dropout": nnx_layer(jdx.Dropout(0.3)),
    "nnx AlphaDropout": nnx_layer(jdx.AlphaDropout(0.3)),
    "nnx DropPath": nnx_layer(jdx.DropPath(0.3)),
}

# Elementwise noise: no collective either, but each element's normal transform (log, erf_inv, sigmoid) is
# computed inside each program, and XLA:CPU vectorizes it by the local shape (vector lanes or a scalar tail):
# the unsharded values and gradients to a few ulp of their scale.
NOISE = {
    "gaussian_dropout": lambda k, x: jaxdrop.gaussian_dropout(k, x, 0.3),
    "gaussian_dropout broadcast": lambda k, x: jaxdrop.gaussian_dropout(k, x, 0.3, broadcast_dims=(2,)),
    "gaussian_noise": lambda k, x: jaxdrop.gaussian_noise(k, x, 0.5),
    "gaussian_noise PHILOX7": lambda k, x: jaxdrop.gaussian_noise(seven(k), x, 0.5),
    "concrete_dropout": lambda k, x: jaxdrop.concrete_dropout(k, x, 0.3),
    "linen GaussianDropout": linen_layer(jdl.GaussianDropout(0.3)),
    "linen GaussianNoise": linen_layer(jdl.GaussianNoise(0.5)),
    "nnx GaussianDropout": nnx_layer(jdx.GaussianDropout(0.3)),
    "nnx GaussianNoise": nnx_layer(jdx.GaussianNoise(0.5)),
}

LSTM_PARAMS = jaxdrop.init_lstm_params(jax.random.key(1), SHAPE[-1], 4)
LINEN_LSTM = jdl.LSTM(4, dropout=0.25, recurrent_dropout=0.25, return_sequences=True)
LINEN_LSTM_VARS = LINEN_LSTM.init(jax.random.key(2), jnp.ones(SHAPE), deterministic=True)
NNX_LSTM = jdx.LSTM(SHAPE[-1], 4, dropout=0.25, recurrent_dropout=0.25, return_sequences=True, rngs=nnx.Rngs(3))
LINEN_DENSE = jdl.DropConnectDense(4, rate=0.3)
LINEN_DENSE_VARS = LINEN_DENSE.init(jax.random.key(4), jnp.ones(SHAPE), deterministic=True)
NNX_DENSE = jdx.DropConnectLinear(SHAPE[-1], 4, rate=0.3, rngs=nnx.Rngs(5))
LINEN_CONCRETE = jdl.ConcreteDropout(nn.Dense(4), length_scale=1e-2, data_size=100)
LINEN_CONCRETE_VARS = {"params": LINEN_CONCRETE.init(jax.random.key(6), jnp.ones(SHAPE), deterministic=True)["params"]}
NNX_CONCRETE = jdx.ConcreteDropout(nnx.Linear(SHAPE[-1], 4, rngs=nnx.Rngs(7)), length_scale=1e-2, data_size=100,
                                   rngs=nnx.Rngs(8))


def attention(key, x):
  return jaxdrop.attention.dot_product_attention(x, x, x, dropout_rng=key, dropout_rate=0.3)


def attention_per_head(key, x):
  return jaxdrop.attention.dot_product_attention(x, x, x, dropout_rng=key, dropout_rate=0.3, broadcast_dropout=False)


# Models around a mask: they may communicate (drop_block's normalization is a global mean and its blocks
# span shards; an LSTM or a matmul reduces over a sharded axis), and reductions split over devices round
# differently, so these are compared to float32 rounding.
MODELS = {
    "drop_block": lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3),
    "drop_block broadcast": lambda k, x: jaxdrop.drop_block(k, x, 0.3, block_size=3, broadcast_dims=(3,)),
    "linen DropBlock": linen_layer(jdl.DropBlock(0.3, block_size=3)),
    "nnx DropBlock": nnx_layer(jdx.DropBlock(0.3, block_size=3)),
    "lstm": lambda k, x: jaxdrop.lstm(LSTM_PARAMS, x, key=k, dropout=0.25, recurrent_dropout=0.25,
                                      return_sequences=True),
    # Noise shared along an axis and split over devices: XLA:CPU computes the normal transform in vector lanes
    # or in a scalar tail depending on the local shape, so the sum may round 1 ulp apart (integer masks cannot).
    "gaussian_noise broadcast": lambda k, x: jaxdrop.gaussian_noise(k, x, 0.5, broadcast_dims=(1,)),
    "lstm zoneout": lambda k, x: jaxdrop.lstm(LSTM_PARAMS, x, key=k, zoneout_cell=0.2, zoneout_hidden=0.3,
                                              return_sequences=True),
    "linen ConcreteDropout": lambda k, x: LINEN_CONCRETE.apply(LINEN_CONCRETE_VARS, x, deterministic=False,
                                                               rngs={"dropout": k}, mutable=["losses"])[0],
    "nnx ConcreteDropout": nnx_layer(NNX_CONCRETE),
    "linen LSTM": lambda k, x: LINEN_LSTM.apply(LINEN_LSTM_VARS, x, deterministic=False, rngs={"dropout": k}),
    "nnx LSTM": nnx_layer(NNX_LSTM),
    "linen DropConnectDense": lambda k, x: LINEN_DENSE.apply(LINEN_DENSE_VARS, x, deterministic=False,
                                                             rngs={"dropout": k}),
    "nnx DropConnectLinear": nnx_layer(NNX_DENSE),
    "attention": attention,
    "attention per head": attention_per_head,
    "attention per head PHILOX7": lambda k, x: attention_per_head(seven(k), x),
}


def forward(fns):
  """All of ``fns`` in one program, each with its own key."""
  return jax.jit(lambda key, x: {name: f(jax.random.fold_in(key, i), x) for i, (name, f) in enumerate(fns.items())})


def loss_weights(o):
  """A weight per output element, k / 8 for k in -8..8: exact dyadics, the same in every program (a cosine is
  not), so that a mask kernel's gradient is where(mask, w * scale, 0), one IEEE multiply in any program."""
  return ((jnp.arange(o.size) % 17) - 8).astype(o.dtype).reshape(o.shape) / 8


def gradient(fns):
  """Gradients with respect to the input of a loss that weights the output elements differently."""
  def loss(x, key):
    outputs = [f(jax.random.fold_in(key, i), x) for i, f in enumerate(fns.values())]
    return sum(jnp.sum(o * loss_weights(o)) for o in outputs)

  return jax.jit(lambda key, x: jax.grad(loss)(x, key))


X = jax.random.normal(jax.random.key(7), SHAPE)


@pytest.fixture(scope="module")
def unsharded():
  return {group: (forward(fns)(KEY, X), gradient(fns)(KEY, X))
          for group, fns in (("masked", MASKED), ("noise", NOISE), ("models", MODELS))}


def auto_mesh(shape):
  names = ("a", "b")[: len(shape)]
  return Mesh(np.asarray(jax.devices()[: int(np.prod(shape))]).reshape(shape), names,
              axis_types=(AxisType.Auto,) * len(shape))


CASES = [  # (mesh shape, how the input is sharded): each axis split on 1-D meshes of 1 to 8 devices, 2-D meshes
    ((1,), P("a")), ((2,), P(None, None, None, "a")), ((4,), P(None, None, "a")),
    ((8,), P("a")), ((8,), P(None, "a")), ((8,), P(None, None, None, "a")),
    ((2, 2), P("a", "b")), ((2, 4), P(None, ("a", "b"))), ((4, 2), P(None, None, "a", "b")),
]


def compiled(program, x):
  """``program`` compiled for ``x``'s sharding: called, and its HLO read, without compiling twice."""
  return program.lower(KEY, x).compile()


def check_masked(fns, expected, mesh_shape, spec, exact=True):
  """Sharded == unsharded (bitwise, or with ``exact=False`` to a few ulp), sharded like the input, and no
  collective in the forward or the gradient program."""
  x = jax.device_put(X, NamedSharding(auto_mesh(mesh_shape), spec))
  fwd, grad = compiled(forward(fns), x), compiled(gradient(fns), x)
  outputs = fwd(KEY, x)
  compare = assert_trees_equal if exact else lambda a, e: assert_close_ulp(a, e, ulp=4, scale="max")
  compare(outputs, {k: expected[0][k] for k in fns})
  compare(grad(KEY, x), expected[1])
  for name, out in outputs.items():
    assert out.sharding.is_equivalent_to(x.sharding, out.ndim), name  # stays sharded like the input
  for program in (fwd, grad):
    assert COLLECTIVES.findall(program.as_text()) == []


WIDE = [((2, 4), P(None, "a", None, "b"))]


@pytest.mark.parametrize(("mesh_shape", "spec"), WIDE, ids=[f"{m}-{s}" for m, s in WIDE])
def test_every_mask_is_bitwise_the_unsharded_one_with_no_communication(unsharded, mesh_shape, spec):
  check_masked(MASKED, unsharded["masked"], mesh_shape, spec)


@pytest.mark.parametrize(("mesh_shape", "spec"), WIDE, ids=[f"{m}-{s}" for m, s in WIDE])
def test_every_noise_is_the_unsharded_one_to_a_few_ulp_with_no_communication(unsharded, mesh_shape, spec):
  check_masked(NOISE, unsharded["noise"], mesh_shape, spec, exact=False)


CORE = ("dropout", "dropout broadcast (0, 3)", "drop_path", "dropout PHILOX7")


@pytest.fixture(scope="module")
def unsharded_core():
  fns = {k: MASKED[k] for k in CORE}
  return forward(fns)(KEY, X), gradient(fns)(KEY, X)


@pytest.mark.parametrize(("mesh_shape", "spec"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_dropout_on_every_mesh_and_axis_is_bitwise_with_no_communication(unsharded_core, mesh_shape, spec):
  check_masked({k: MASKED[k] for k in CORE}, unsharded_core, mesh_shape, spec)


@pytest.mark.parametrize(("mesh_shape", "spec"), WIDE, ids=["2-D"])
def test_models_around_masks_run_sharded(unsharded, mesh_shape, spec):
  x = jax.device_put(X, NamedSharding(auto_mesh(mesh_shape), spec))
  outputs, grads = forward(MODELS)(KEY, x), gradient(MODELS)(KEY, x)
  assert_trees_close(outputs, unsharded["models"][0], rtol=2e-5, atol=2e-6)
  assert_trees_close(grads, unsharded["models"][1], rtol=2e-5, atol=2e-5)
  # drop_block's mask is exact: where the unsharded output is zero, so is the sharded one
  for name in ("drop_block", "drop_block broadcast"):
    np.testing.assert_array_equal(outputs[name] == 0, unsharded["models"][0][name] == 0)


def test_explicit_sharding_meshes_give_the_unsharded_values():
  # jax.make_mesh's default axes are Explicit: shardings are part of the types.
  mesh = jax.make_mesh((4, 2), ("a", "b"))
  masked = {k: MASKED[k] for k in ("dropout", "linen Dropout", "nnx DropPath")}
  noise = {"gaussian_dropout": NOISE["gaussian_dropout"]}
  with jax.set_mesh(mesh):
    groups = {"masked": masked, "noise": noise}
    expected = {name: (forward(fns)(KEY, X), gradient(fns)(KEY, X)) for name, fns in groups.items()}
    for spec in (P("a"), P(None, None, "b", "a")):
      x = jax.device_put(X, NamedSharding(mesh, spec))
      outputs = forward(masked)(KEY, x)
      assert_trees_equal(outputs, expected["masked"][0])  # mask kernels: bitwise, as check_masked
      assert_trees_equal(gradient(masked)(KEY, x), expected["masked"][1])
      assert tuple(jax.typeof(outputs["dropout"]).sharding.spec)[: len(spec)] == tuple(spec)
      assert_close_ulp(forward(noise)(KEY, x), expected["noise"][0], ulp=4, scale="max")  # as NOISE
      assert_close_ulp(gradient(noise)(KEY, x), expected["noise"][1], ulp=4, scale="max")
    # attention over a batch-sharded input (its einsums need q and k unsharded along the length)
    program = jax.jit(lambda key, x: attention(jax.random.fold_in(key, 0), x))
    expected, actual = program(KEY, X), program(KEY, jax.device_put(X, NamedSharding(mesh, P("a"))))
    assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_shard_map_sees_local_blocks_and_axis_index_gives_each_shard_its_own_mask():
  mesh = auto_mesh((4,))
  x = jnp.ones((8, 64))

  def local(key, block, distinct):
    if distinct:
      key = jax.random.fold_in(key, jax.lax.axis_index("a"))
    return jaxdrop.dropout(key, block, 0.5)

  def run(distinct):
    return jax.jit(jax.shard_map(lambda k, b: local(k, b, distinct), mesh=mesh, in_specs=(P(), P("a")),
                                 out_specs=P("a")))(jax.random.clone(KEY), x)

  same = np.asarray(run(False)).reshape(4, 2, 64)
  for block in same[1:]:  # the same key on the same local shape: the same mask in every shard
    np.testing.assert_array_equal(block, same[0])
  np.testing.assert_array_equal(same[0], jaxdrop.dropout(jax.random.clone(KEY), x[:2], 0.5))
  own = np.asarray(run(True)).reshape(4, 2, 64)
  for i in range(4):
    np.testing.assert_array_equal(own[i], jaxdrop.dropout(jax.random.fold_in(KEY, i), x[:2], 0.5))
  assert len({block.tobytes() for block in own}) == 4


def test_remat_keeps_no_mask():
  """Under ``nn.remat`` a block with dropout needs no more compiled memory than the same block without."""

  class Block(nn.Module):
    rate: float
    use_jaxdrop: bool = True

    @nn.compact
    def __call__(self, x):
      for _ in range(4):
        h = nn.gelu(nn.Dense(512)(x))
        drop = jdl.Dropout(self.rate) if self.use_jaxdrop else nn.Dropout(self.rate)
        x = x + drop(h, deterministic=False)
      return x

  def temp_bytes(rate, use_jaxdrop=True):
    model = nn.remat(Block)(rate, use_jaxdrop)
    x = jnp.ones((256, 512))
    params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    loss = lambda p, key: jnp.sum(model.apply(p, x, rngs={"dropout": key}) ** 2)
    compiled = jax.jit(jax.grad(loss)).lower(params, KEY).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  without, with_jaxdrop, with_flax = temp_bytes(0.0), temp_bytes(0.1), temp_bytes(0.1, use_jaxdrop=False)
  mask_bytes = 256 * 512  # one boolean mask of a block's activations
  assert with_jaxdrop <= without + mask_bytes // 4, (with_jaxdrop, without)
  assert with_flax >= without + mask_bytes, (with_flax, without)  # the measurement sees a kept mask
