"""Issue 22's structured regularizers sharded over the batch under JAX's default partitioner (8 simulated CPU
devices, see tests/test_sharded_suite.py): the unsharded program's values, with no collective.

Each draws from the key and each element's (token's, row's, band's, layer's) global index only, so the
partitioned program computes, per device, the same values for fewer examples: bitwise by construction where
the rest is elementwise or gathers. Where a matmul runs on the smaller local batch (the reference attention's
einsums, a layer stack), XLA:CPU may pick another dot kernel, so those agree to a few ulp of their scale; a
different mask or layer choice would be far outside that.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdrop
from jaxdrop.attention import dot_product_attention
from tests._asserts import assert_close_ulp, assert_trees_equal

COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(-start)?\(")
MESH = Mesh(np.asarray(jax.devices()), ("b",), axis_types=(AxisType.Auto,))
RNG = np.random.default_rng(0)
TOKENS = jnp.asarray(RNG.standard_normal((16, 17, 4), np.float32))
IDS = jnp.asarray(RNG.integers(0, 64, (16, 12)), jnp.int32)
TABLE = jnp.asarray(RNG.standard_normal((64, 4), np.float32))
SPECTROGRAMS = jnp.asarray(RNG.standard_normal((16, 2, 8, 20), np.float32))
QKV = jnp.asarray(RNG.standard_normal((16, 24, 2, 8), np.float32))
STACK = {"w": jnp.asarray(RNG.standard_normal((6, 4, 4), np.float32) / 2)}


def attention(x, implementation):
  return dot_product_attention(x, x, x, dropout_rng=jax.random.key(0), drop_key_rate=0.3, dropout_rate=0.1,
                               broadcast_dropout=False, implementation=implementation, block_q=8, block_k=8)


def stack(x):
  return jaxdrop.layer_drop(jax.random.key(0), lambda p, h: jnp.tanh(h @ p["w"]), STACK, x, 0.5)


# (function of the batch-sharded array, the array): forward values and the gradient of a weighted sum.
# The masks are the same bits sharded or not (the tiles' generator: bitwise in test_blockwise_sharding); products
# over a batch shard are another program than over the whole batch, whose dot kernels may round otherwise
# (blockwise DropKey was bitwise on AMD Zen 3 and differs by a few ulp on an AVX-512 Xeon), so the cases
# with matmuls are compared at 32 ulp of the largest value.
MATMULS = ("drop_key reference", "drop_key blockwise", "layer_drop")
CASES = {
    "patch_dropout": (lambda x: jaxdrop.patch_dropout(jax.random.key(0), x, 0.5, return_indices=True), TOKENS),
    "embedding_dropout": (lambda i: jaxdrop.embedding_dropout(jax.random.key(0), TABLE, i, 0.5), IDS),
    "embedding_dropout per_sequence": (
        lambda i: jaxdrop.embedding_dropout(jax.random.key(0), TABLE, i, 0.5, per_sequence=True), IDS),
    "time_mask iid": (lambda s: jaxdrop.time_mask(jax.random.key(0), s, 10, iid_masks=True), SPECTROGRAMS),
    "frequency_mask": (lambda s: jaxdrop.frequency_mask(jax.random.key(0), s, 4), SPECTROGRAMS),
    "drop_key reference": (lambda x: attention(x, "reference"), QKV),
    "drop_key blockwise": (lambda x: attention(x, "blockwise"), QKV),
    "layer_drop": (lambda x: stack(x), TOKENS),
}


def weighted_sum(out):
  # exact dyadic weights k / 8, the same in every program
  leaves = [o for o in jax.tree.leaves(out) if jnp.issubdtype(o.dtype, jnp.floating)]
  return sum(jnp.sum(o * ((jnp.arange(o.size) % 17 - 8).astype(o.dtype).reshape(o.shape) / 8)) for o in leaves)


@pytest.mark.parametrize("name", list(CASES))
def test_batch_sharding_gives_the_unsharded_values_with_no_collective(name):
  fn, array = CASES[name]
  programs = [jax.jit(fn)]
  if jnp.issubdtype(array.dtype, jnp.floating):
    programs.append(jax.jit(jax.grad(lambda a: weighted_sum(fn(a)))))
  sharded = jax.device_put(array, NamedSharding(MESH, P("b")))
  compare = (lambda a, e: assert_close_ulp(a, e, ulp=32, scale="max")) if name in MATMULS else assert_trees_equal
  for program in programs:
    compare(program(sharded), program(array))
    assert COLLECTIVES.findall(program.lower(sharded).compile().as_text()) == [], name
