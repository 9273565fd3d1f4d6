"""The layer_drop bench section (benchmarks/layer_drop.py) at tiny sizes: every rate runs, the step is the one
of jaxdrop.layer_drop (at rate 0 it is SGD on the plain scan, at rate 1 it changes nothing), and the table is rendered (no
timing asserted)."""

import jax
import jax.numpy as jnp

from benchmarks import bench, layer_drop
from tests._asserts import assert_close_ulp


def test_the_section_runs_every_rate_and_renders():
  rows = layer_drop.bench_layer_drop(reps=1, tiny=True)
  assert [r["rate"] for r in rows] == list(layer_drop.RATES)
  assert all(r["ms"] > 0 for r in rows) and rows[0]["vs_rate_0"] == 1.0
  markdown = bench.render({"date": "d", "cpu_count": 2, "environment": {
      "backend": "cpu", "device_kind": "cpu", "machine": "x86_64", "jax": "0", "flax": "0"},
      "layer_drop": rows})
  assert "**LayerDrop skips compute**" in markdown and "| 0.50 | " in markdown
  assert "layer_drop" in bench.SECTIONS


def test_the_step_at_rate_0_is_sgd_on_the_plain_stack_and_rate_1_leaves_the_blocks_unchanged():
  params, step = layer_drop.build(tiny=True)
  x, target = layer_drop.batch(tiny=True)

  def plain_loss(p):
    out = jax.lax.scan(lambda c, q: (layer_drop.block(q, c), None), x, p)[0]
    return jnp.mean((out - target) ** 2)

  expected = jax.tree.map(lambda p, g: p - 1e-3 * g, params, jax.grad(plain_loss)(params))
  assert_close_ulp(step(params, jax.random.key(0), jnp.float32(0.0)), expected, ulp=8, scale="max")
  # every block dropped: zero gradients, the parameters unchanged
  assert_close_ulp(step(params, jax.random.key(0), jnp.float32(1.0)), params, ulp=0)
