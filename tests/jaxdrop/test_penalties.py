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
  # Exact by construction: small integers and dyadics, so every partial sum is exact in any order and program.
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
  g = jax.grad(jaxdrop.l2_penalty)(p)  # exact by construction: 2 w / 2, sign(w) and 0 round nothing
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
  assert float(jax.jit(jaxdrop.l1_penalty)(params())) == 8.0  # exact sums of small dyadics, jitted or not


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


# --- complex, integer and non-numeric leaves (issue 17) ---------------------------------


def complex_params():
  kr, ki = jax.random.split(jax.random.key(20))
  w = jax.lax.complex(jax.random.normal(kr, (3, 4)), jax.random.normal(ki, (3, 4)))  # complex64
  return {"kernel": w.at[0, 0].set(0), "bias": jnp.ones(4, jnp.complex64)}


def test_complex_leaves_are_measured_by_their_modulus_and_the_results_are_real():
  p = complex_params()
  w = np.asarray(p["kernel"]).astype(np.complex128)
  modulus = np.abs(w)  # numpy's, in float64
  expected = {
      "l1": modulus.sum(), "l2": (modulus**2).sum() / 2, "l2_norm": np.linalg.norm(w.ravel()),
      "elastic": 0.3 * modulus.sum() + 0.7 * (modulus**2).sum() / 2,
  }
  got = {"l1": jaxdrop.l1_penalty(p), "l2": jaxdrop.l2_penalty(p), "l2_norm": jaxdrop.l2_norm_penalty(p),
         "elastic": jaxdrop.elastic_net_penalty(p, l1_ratio=0.3)}
  for name, value in got.items():
    assert value.dtype == jnp.float32, name  # real: complex64's real dtype
    np.testing.assert_allclose(float(value), expected[name], rtol=1e-6, err_msg=name)
  # The cases, exact: |i|^2 = 1 and |2i| = 2.
  assert float(jaxdrop.l2_penalty({"kernel": jnp.array([[1j, 1j]], jnp.complex64)})) == 1.0
  assert float(jaxdrop.l1_penalty({"kernel": jnp.array([[2j, 2j]], jnp.complex64)})) == 4.0
  with jax.enable_x64(True):
    assert jaxdrop.l2_penalty({"kernel": jnp.array([[1j]], jnp.complex128)}).dtype == jnp.float64


def test_complex_gradients_follow_jax_convention_and_are_zero_not_nan_at_zero():
  p = complex_params()
  w = np.asarray(p["kernel"])
  # JAX's grad of a real function of z = x + iy is df/dx - i df/dy: conj(w) for |w|^2 / 2.
  np.testing.assert_array_equal(jax.grad(jaxdrop.l2_penalty)(p)["kernel"], np.conj(w))  # 2 x / 2: exact
  g1 = np.asarray(jax.grad(jaxdrop.l1_penalty)(p)["kernel"])
  nonzero = w != 0
  np.testing.assert_allclose(g1[nonzero], np.conj(w[nonzero]) / np.abs(w[nonzero]), rtol=1e-6)
  assert g1[0, 0] == 0  # the subgradient 0 at w == 0, as for real leaves
  gn = np.asarray(jax.grad(jaxdrop.l2_norm_penalty)(p)["kernel"])
  np.testing.assert_allclose(gn, np.conj(w) / np.linalg.norm(w), rtol=1e-5, atol=1e-7)
  zero = {"kernel": jnp.zeros((2, 2), jnp.complex64)}
  for penalty in (jaxdrop.l1_penalty, jaxdrop.l2_penalty, jaxdrop.l2_norm_penalty, jaxdrop.elastic_net_penalty):
    np.testing.assert_array_equal(jax.grad(penalty)(zero)["kernel"], np.zeros((2, 2), np.complex64))


def test_integer_leaves_are_computed_in_float_without_overflow():
  p = {"kernel": jnp.full((3, 4), 50000, jnp.int32), "w": jnp.array([[-3, 7]], jnp.int32)}
  k, w = (np.asarray(leaf, np.float64) for leaf in (p["kernel"], p["w"]))
  expected = {
      "l1": np.abs(k).sum() + np.abs(w).sum(), "l2": (k**2).sum() / 2 + (w**2).sum() / 2,  # 1.5e10: int32 wraps
      "l2_norm": np.linalg.norm(k.ravel()) + np.linalg.norm(w.ravel()),
      "elastic": 0.5 * (np.abs(k).sum() + np.abs(w).sum()) + 0.5 * ((k**2).sum() + (w**2).sum()) / 2,
  }
  got = {"l1": jaxdrop.l1_penalty(p), "l2": jaxdrop.l2_penalty(p), "l2_norm": jaxdrop.l2_norm_penalty(p),
         "elastic": jaxdrop.elastic_net_penalty(p)}
  for name, value in got.items():
    assert value.dtype == jnp.float32, name  # the default float dtype
    np.testing.assert_allclose(float(value), expected[name], rtol=1e-6, err_msg=name)  # float32 tolerance
  with jax.enable_x64(True):  # the default float dtype is float64 there
    big = jaxdrop.l2_penalty({"kernel": jnp.full((1, 2), 2**31 - 1, jnp.int32)})
    # (r + r) / 2 == r exactly, r the square rounded once to float64 on both sides.
    assert big.dtype == jnp.float64 and float(big) == float(2**31 - 1) ** 2
  flags = {"kernel": jnp.array([[True, False], [True, True]])}  # bools count as 0 and 1
  assert float(jaxdrop.l1_penalty(flags)) == 3.0 and float(jaxdrop.l2_penalty(flags)) == 1.5


def test_a_leaf_that_is_not_a_number_is_refused_naming_it():
  keys = jax.random.split(jax.random.key(21), 4).reshape(2, 2)  # two dimensions: a weight by rank
  with pytest.raises(TypeError, match=r"params leaf \['rng'\] has dtype key<fry>.*mask="):
    jaxdrop.l2_penalty({"rng": keys, "kernel": jnp.ones((2, 2))})


def _keras_orthogonal(w, mode):
  """Keras 3's ``OrthogonalRegularizer(factor=1, mode)(w)`` (keras/src/regularizers/regularizers.py), in NumPy:
  l2-normalize the rows (columns), then 0.5 * sum |off-diagonal of the Gram matrix| / number of pairs."""
  axis = 1 if mode == "rows" else 0
  unit = w / np.sqrt(np.maximum(np.sum(w**2, axis=axis, keepdims=True), 1e-12))
  product = unit @ unit.T if mode == "rows" else unit.T @ unit
  size = product.shape[0]
  return 0.5 * np.sum(np.abs(product * (1.0 - np.eye(size)))) / (size * (size - 1.0) / 2.0)


@pytest.mark.parametrize("mode", ["rows", "columns"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 7), (2, 2)])
def test_the_orthogonal_penalty_is_keras_orthogonal_regularizer(mode, shape):
  w = np.random.default_rng(sum(shape)).normal(size=shape)
  got = jaxdrop.orthogonal_penalty(jnp.asarray(w, jnp.float32), mode)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), _keras_orthogonal(w, mode), rtol=2e-6)


def test_the_orthogonal_penalty_is_zero_for_orthogonal_and_one_for_parallel_vectors():
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
  assert float(jaxdrop.orthogonal_penalty(jnp.asarray(q, jnp.float32))) == pytest.approx(0.0, abs=1e-6)
  assert float(jaxdrop.orthogonal_penalty(jnp.asarray(q, jnp.float32), "columns")) == pytest.approx(0.0, abs=1e-6)
  parallel = jnp.outer(jnp.array([1.0, -2.0, 3.0]), jnp.array([0.5, 1.0]))  # every row a multiple of one
  assert float(jaxdrop.orthogonal_penalty(parallel)) == pytest.approx(1.0)
  zero_row = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a zero row is normalized to zero, not NaN
  assert float(jaxdrop.orthogonal_penalty(zero_row)) == 0.0
  grad = jax.grad(jaxdrop.orthogonal_penalty)(zero_row + 0.1)
  assert bool(jnp.isfinite(grad).all()) and bool((grad != 0).any())


def test_the_orthogonal_penalty_sums_over_the_selected_matrices_of_a_tree():
  params = {"dense": {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32),
                      "bias": jnp.ones(3)},
            "out": {"kernel": jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32)}}
  expected = sum(_keras_orthogonal(np.asarray(params[k]["kernel"]), "rows") for k in ("dense", "out"))
  assert float(jaxdrop.orthogonal_penalty(params)) == pytest.approx(expected, rel=1e-5)  # biases left out
  only = jaxdrop.orthogonal_penalty(params, mask=lambda path, leaf: "out" in jax.tree_util.keystr(path))
  assert float(only) == pytest.approx(_keras_orthogonal(np.asarray(params["out"]["kernel"]), "rows"), rel=1e-5)


@pytest.mark.parametrize(("args", "error", "match"), [
    ((jnp.ones((3, 3)), "diagonal"), ValueError, "mode must be 'rows' or 'columns'"),
    ((jnp.ones((1, 3)),), ValueError, "at least 2"),
    ((jnp.ones((3, 1)), "columns"), ValueError, "at least 2"),
    (({"conv": {"kernel": jnp.ones((3, 3, 2, 4))}},), ValueError, "2-D matrices.*mask="),
    ((jnp.ones((2, 2), jnp.complex64),), TypeError, "real matrices"),
])
def test_the_orthogonal_penalty_refuses_what_it_cannot_measure(args, error, match):
  with pytest.raises(error, match=match):
    jaxdrop.orthogonal_penalty(*args)
