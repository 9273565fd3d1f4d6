"""Blockwise attention sharded under JAX's default partitioner (8 simulated CPU devices, see
tests/test_sharded_suite.py): over batch and heads bitwise the unsharded program with no collective; over the
sequence, gathered (the documented behaviour)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdrop.attention import dot_product_attention
from tests._asserts import assert_close_ulp, assert_trees_equal

COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(-start)?\(")
B, L, H, D = 4, 24, 4, 8
Q, K, V = (jax.random.normal(k, (B, L, H, D)) for k in jax.random.split(jax.random.key(0), 3))


def key():
  return jax.random.key(1)  # a fresh key object per call (the tests check key reuse)


MESH = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("a", "b"), axis_types=(AxisType.Auto,) * 2)


def attention(q, k, v, key, is_causal):
  return dot_product_attention(q, k, v, dropout_rate=0.3, dropout_rng=key, implementation="blockwise",
                               block_q=8, block_k=16, broadcast_dropout=False, is_causal=is_causal)


def programs(is_causal):
  def loss(q, k, v, key):
    out = attention(q, k, v, key, is_causal)
    # exact dyadic weights k / 8: the same in every program
    return jnp.sum(out * ((jnp.arange(out.size) % 17 - 8).astype(out.dtype).reshape(out.shape) / 8))

  return jax.jit(lambda q, k, v, key: attention(q, k, v, key, is_causal)), jax.jit(jax.grad(loss, (0, 1, 2)))


@pytest.mark.parametrize("is_causal", [False, True])
def test_batch_and_head_sharding_is_bitwise_the_unsharded_program_with_no_collective(is_causal):
  # Each (example, head) is computed from its own rows of q, k, v and its own mask elements (from their global
  # index): the partitioned program runs, per device, the same tile computations on fewer (example, head)
  # pairs, so bitwise equal by construction.
  forward, gradient = programs(is_causal)
  expected = forward(Q, K, V, key()), gradient(Q, K, V, key())
  for spec in (P("a"), P("a", None, "b"), P(None, None, "b")):
    q, k, v = (jax.device_put(x, NamedSharding(MESH, spec)) for x in (Q, K, V))
    out, grads = forward(q, k, v, key()), gradient(q, k, v, key())
    assert_trees_equal(out, expected[0])
    assert_trees_equal(grads, expected[1])
    assert out.sharding.spec == spec
    for program in (forward, gradient):
      assert COLLECTIVES.findall(program.lower(q, k, v, key()).compile().as_text()) == []


def test_sequence_sharding_gathers_the_sequence():
  # Documented (docs/attention.md): the partitioner all-gathers q, k and v along the sequence, each device
  # computes whole sequences (of its batch and head shard, if any), and the output is not sharded along the
  # sequence; the values equal the unsharded ones to float rounding.
  forward, _ = programs(True)
  expected = forward(Q, K, V, key())
  q, k, v = (jax.device_put(x, NamedSharding(MESH, P("b", "a"))) for x in (Q, K, V))
  out = forward(q, k, v, key())
  assert_close_ulp(out, expected, ulp=8, scale="max")
  assert out.sharding.spec[1:2] in ((), (None,))
  assert "all-gather" in {c for c, _ in COLLECTIVES.findall(forward.lower(q, k, v, key()).compile().as_text())}
