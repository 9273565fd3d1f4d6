"""The step_overhead bench section (benchmarks/step_overhead.py) at tiny sizes: every model, path and variant
runs, the variants are the same network (same parameters), and the table is rendered (no timing
asserted)."""

import jax
import numpy as np
import pytest

import jaxdrop
from benchmarks import bench, step_overhead


def test_the_section_runs_every_path_and_variant():
  models = ("e2_mlp_256", "encoder")  # a plain step and one under nn.scan (every model builds: the next test)
  rows = step_overhead.bench_step_overhead(models, reps=1, steps=2, tiny=True)
  got = {(r["model"], r["path"], r["variant"]) for r in rows}
  assert got == {(m, p, v) for m in models for p in ("loop", "scan") for v in step_overhead.VARIANTS}
  assert all(r["ms"] > 0 and r["temp_mib"] > 0 for r in rows)
  assert all(r["overhead_pct"] == 0 for r in rows if r["variant"] == "none")
  markdown = bench.render({"date": "d", "cpu_count": 2, "environment": {
      "backend": "cpu", "device_kind": "cpu", "machine": "x86_64", "jax": "0", "flax": "0"},
      "step_overhead": rows})
  assert "**Dropout inside train steps**" in markdown and "| encoder | scan | " in markdown
  assert "step_overhead" in bench.SECTIONS


@pytest.mark.parametrize("model", step_overhead.MODELS)
def test_the_variants_are_the_same_network(model):
  # Dropout adds no parameters: the variants initialize bitwise the same parameters, so the overheads
  # compare the same steps; without dropout, training and evaluation give the same output.
  x = None
  params = {}
  for variant in step_overhead.VARIANTS:
    module, shape, _ = step_overhead.build(model, variant, tiny=True)
    x = np.random.default_rng(0).standard_normal((2, *shape[1:]), dtype=np.float32)
    params[variant] = module.init(jax.random.key(0), x, train=False)
    if variant == "none":
      train = module.apply(params[variant], x, train=True, rngs={"dropout": jax.random.key(1)})
      np.testing.assert_array_equal(train, module.apply(params[variant], x, train=False))
  for variant in ("jaxdrop", "flax", "philox7"):
    assert jax.tree.structure(params[variant]) == jax.tree.structure(params["none"])
    for a, b in zip(jax.tree.leaves(params[variant]), jax.tree.leaves(params["none"]), strict=True):
      np.testing.assert_array_equal(a, b)


def test_the_philox7_variant_trains_with_the_7_round_generator():
  assert jaxdrop.mask_generator(step_overhead.dropout_key("philox7")) == jaxdrop.MASK_GENERATOR_7
  assert jaxdrop.mask_generator(step_overhead.dropout_key("jaxdrop")) == jaxdrop.MASK_GENERATOR


def test_unknown_models_are_refused():
  with pytest.raises(ValueError, match="model: 'e99' is not one of"):
    step_overhead.build("e99", "none")
