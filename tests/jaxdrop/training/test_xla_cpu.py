"""The convolutional fast paths: pooling, patch convolutions, XLA options, and every epoch path agreeing."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from experiments.models import CNN
from experiments.runner import init_linen, linen_task
from jaxdrop import training
from jaxdrop.training.xla_cpu import conv_general_dilated, max_pool
from tests._asserts import assert_close_ulp, assert_same_mask


@pytest.mark.parametrize(("window", "strides", "padding"), [
    ((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), ((1, 1), (1, 1))), ((3, 3), (2, 2), "SAME"), ((2, 3), (1, 2), "VALID"),
    ((3, 3), None, "SAME"),
])
def test_max_pool_equals_flax_in_value_and_gradient(window, strides, padding):
  x = jax.random.normal(jax.random.key(0), (3, 9, 11, 4))  # continuous values: no tied maxima
  ours = lambda v: max_pool(v, window, strides, padding)
  theirs = lambda v: nn.max_pool(v, window, strides, padding)
  np.testing.assert_array_equal(ours(x), theirs(x))  # exact by construction: a max selects one input
  w = jax.random.normal(jax.random.key(1), ours(x).shape)
  g_ours, g_flax = (jax.grad(lambda v, f=f: jnp.sum(f(v) * w))(x) for f in (ours, theirs))
  assert_same_mask(g_ours, g_flax)  # each window sends its cotangent to the same maximum
  if tuple(strides or (1, 1)) == tuple(window):  # disjoint windows: one cotangent per input (a selection)
    np.testing.assert_array_equal(g_ours, g_flax)
  # Overlapping windows add their cotangents in the order each algorithm (and backend) chooses: a few ulp.
  assert_close_ulp(g_ours, g_flax, ulp=4, scale="max")


def test_max_pool_has_no_select_and_scatter_in_its_gradient():
  jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(max_pool(v, (2, 2), (2, 2)))))(jnp.ones((1, 4, 4, 1)))
  assert "select_and_scatter" not in str(jaxpr) and "reduce_window" not in str(jaxpr)


def test_max_pool_errors():
  with pytest.raises(ValueError, match="one size per spatial axis"):
    max_pool(jnp.ones((1, 4, 4, 1)), (2,))
  with pytest.raises(ValueError, match="larger than the"):
    max_pool(jnp.ones((1, 2, 2, 1)), (3, 3))


@pytest.mark.parametrize(("size", "kernel", "padding"), [(2, 4, "SAME"), (1, 3, "SAME"), (3, 5, ((2, 2), (1, 3))),
                                                        (4, 4, "SAME"), (8, 3, "VALID")])
def test_patch_convolution_equals_lax_in_value_and_gradient(size, kernel, padding):
  x = jax.random.normal(jax.random.key(2), (2, size, size, 6))
  k = jax.random.normal(jax.random.key(3), (kernel, kernel, 6, 5))
  ref = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, k: conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
  g_ours = jax.grad(lambda x, k: jnp.sum(ours(x, k) ** 2), argnums=(0, 1))(x, k)
  g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) ** 2), argnums=(0, 1))(x, k)
  for a, b in zip(g_ours, g_ref, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_patch_path_only_where_the_kernel_is_larger_than_the_map():
  small = jax.make_jaxpr(lambda x, k: conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  assert "conv_general_dilated" not in str(small(jnp.ones((1, 2, 2, 3)), jnp.ones((4, 4, 3, 2))))
  assert "conv_general_dilated" in str(small(jnp.ones((1, 8, 8, 3)), jnp.ones((4, 4, 3, 2))))


def cifar_like(n=48, size=16, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, (n, size, size, 3))
  y = jax.random.randint(ky, (n,), 0, 10).astype(jnp.int32)
  return types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])


@pytest.mark.parametrize("model", [CNN(padding="SAME")], ids=["E4 CNN"])  # E6 shares the machinery (slow to compile)
def test_every_path_and_compiler_option_gives_the_same_parameters(model):
  data = cifar_like()
  params = init_linen(model, data.x_train)(training.run_keys(0)["init"])
  # SGD: Adam's normalized steps turn float rounding near zero gradients into lr-sized differences.
  tx = jaxdrop.sgd(0.01, momentum=0.9)
  task = linen_task(model)
  runs = {}
  for path, options in (("loop", "auto"), ("scan", "auto"), ("loop", None)):
    runs[(path, options)] = training.fit(task, params, tx, data, epochs=2, batch_size=16, seed=0, quiet=True,
                                       path=path, compiler_options=options)
  auto = runs[("loop", "auto")]
  if jax.default_backend() == "cpu":
    assert auto.execution["compiler_options"] == training.xla_cpu.CPU_CONV_COMPILER_OPTIONS
  assert runs[("loop", None)].execution["compiler_options"] == {}
  for key, result in runs.items():
    for a, b in zip(jax.tree.leaves(auto.state.params), jax.tree.leaves(result.state.params), strict=True):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(a))), err_msg=str(key))


def test_dense_models_get_no_compiler_options():
  data = cifar_like()
  model = nn.Dense(10)
  task = training.Task(lambda p, x, train, key: model.apply({"params": p}, x.reshape(x.shape[0], -1)), training.cross_entropy)
  params = model.init(jax.random.key(0), data.x_train[:1].reshape(1, -1))["params"]
  assert training.xla_cpu.choose_compiler_options(task, params, data.x_train) == {}
