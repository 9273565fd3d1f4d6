"""L1/L2/L2-norm/elastic-net penalties and the parameter masks they use."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdrop


def params():
  return {
      "dense": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.0]]), "bias": jnp.array([10.0, -10.0])},
      "norm": {"scale": jnp.array([5.0, 5.0])},
      "conv": {"kernel": jnp.full((2, 2, 1, 1), -0.5)},
  }


def test_exact_values_exclude_biases_and_scales_by_default():
  p = params()
  assert float(jaxdrop.l1_penalty(p)) == 1 + 2 + 3 + 4 * 0.5
  assert float(jaxdrop.l2_penalty(p)) == (1 + 4 + 9 + 4 * 0.25) / 2
  assert float(jaxdrop.l2_norm_penalty(p)) == pytest.approx(np.sqrt(14) + 1.0, rel=1e-6)
  assert float(jaxdrop.elastic_net_penalty(p, l1_ratio=0.25)) == pytest.approx(0.25 * 8 + 0.75 * 7.5)
  assert float(jaxdrop.elastic_net_penalty(p, l1_ratio=1.0)) == float(jaxdrop.l1_penalty(p))
  assert float(jaxdrop.elastic_net_penalty(p, l1_ratio=0.0)) == float(jaxdrop.l2_penalty(p))


def test_all_params_includes_biases_like_seed_004():
  p = params()
  expected = sum(float(jnp.linalg.norm(leaf.ravel())) for leaf in jax.tree.leaves(p))
  assert float(jaxdrop.l2_norm_penalty(p, mask=jaxdrop.all_params)) == pytest.approx(expected, rel=1e-6)
  assert float(jaxdrop.l1_penalty(p, mask=jaxdrop.all_params)) == 8 + 20 + 10


def test_predicate_and_pytree_masks():
  p = params()
  only_conv = lambda path, leaf: "conv" in jax.tree_util.keystr(path)
  assert float(jaxdrop.l1_penalty(p, mask=only_conv)) == 2.0
  tree_mask = {"dense": True, "norm": False, "conv": False}  # a prefix of params
  assert float(jaxdrop.l1_penalty(p, mask=tree_mask)) == 6 + 20
  with pytest.raises(ValueError, match="structure of params"):
    jaxdrop.l1_penalty(p, mask={"dense": True})
  with pytest.raises(TypeError, match="must return a bool"):
    jaxdrop.l1_penalty(p, mask=lambda path, leaf: "yes")


def test_gradients():
  p = params()
  g = jax.grad(jaxdrop.l2_penalty)(p)
  np.testing.assert_array_equal(g["dense"]["kernel"], p["dense"]["kernel"])
  np.testing.assert_array_equal(g["dense"]["bias"], np.zeros(2, np.float32))
  g1 = jax.grad(jaxdrop.l1_penalty)(p)
  np.testing.assert_array_equal(g1["dense"]["kernel"], np.sign(p["dense"]["kernel"]))
  zero = {"kernel": jnp.zeros((3, 3))}
  gz = jax.grad(jaxdrop.l2_norm_penalty)(zero)
  np.testing.assert_array_equal(gz["kernel"], np.zeros((3, 3), np.float32))  # not NaN
  gn = jax.grad(jaxdrop.l2_norm_penalty)(p)
  k = np.asarray(p["dense"]["kernel"])
  np.testing.assert_allclose(gn["dense"]["kernel"], k / np.linalg.norm(k), rtol=1e-6)


def test_empty_selection_dtype_and_jit():
  assert float(jaxdrop.l2_penalty({"bias": jnp.ones(3)})) == 0.0
  half = {"kernel": jnp.ones((300, 300), jnp.bfloat16)}
  out = jaxdrop.l2_penalty(half)
  assert out.dtype == jnp.float32 and float(out) == 300 * 300 / 2  # accumulated in float32
  assert float(jax.jit(jaxdrop.l1_penalty)(params())) == 8.0


def test_flax_linen_and_nnx_parameter_trees():
  model = nn.Sequential([nn.Dense(4), nn.LayerNorm(), nn.Dense(2)])
  variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  mask = jaxdrop.resolve_mask(variables)
  flags = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert all(v == ("kernel" in k) for k, v in flags.items())
  kernels = variables["params"]["layers_0"]["kernel"], variables["params"]["layers_2"]["kernel"]
  assert float(jaxdrop.l2_penalty(variables)) == pytest.approx(sum(float(jnp.sum(k**2)) / 2 for k in kernels))

  linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
  state = nnx.state(linear, nnx.Param)
  assert float(jaxdrop.l1_penalty(state)) == pytest.approx(float(jnp.sum(jnp.abs(linear.kernel[...]))))
  bias_mask = jaxdrop.resolve_mask(state)
  assert jax.tree.leaves(bias_mask) == [False, True]  # bias, kernel


def test_l1_ratio_checked():
  with pytest.raises(ValueError, match="l1_ratio"):
    jaxdrop.elastic_net_penalty(params(), l1_ratio=1.5)
