"""Rates at call time: schedules over training steps and stochastic depth over layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import nnx as jdx
from tests._asserts import assert_trees_equal

N = 8192  # elements per draw: a drop fraction is within 5 sigma = 5 * sqrt(p (1 - p) / N) <= 0.028 of p


def within_5_sigma(fractions, rates):
  fractions, rates = np.asarray(fractions), np.asarray(rates)
  sigma = np.sqrt(rates * (1 - rates) / N) + 1e-12
  assert np.all(np.abs(fractions - rates) <= 5 * sigma), (fractions, rates)


@pytest.mark.parametrize("layer", [jdl.Dropout(0.5), jdl.AlphaDropout(0.5), jdl.DropPath(0.5),
                                   jdl.GaussianDropout(0.5), jdl.DropBlock(0.5, block_size=2)],
                         ids=lambda l: type(l).__name__)
def test_linen_call_time_rate_overrides_the_attribute(layer):
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  key = jax.random.key(1)
  apply = lambda module, **kw: module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.clone(key)}, **kw)
  out = apply(layer, rate=0.2)
  assert_trees_equal(out, apply(layer.clone(rate=0.2)))  # by construction: the same Python rate, the same ops
  assert not np.array_equal(out, apply(layer))


def test_nnx_call_time_rate_equals_the_function():
  x = jnp.ones((64, 32))
  key = jax.random.key(2)
  out = jdx.Dropout(0.5)(x, rngs=jax.random.clone(key), rate=jnp.float32(0.25))
  assert_trees_equal(out, jaxdrop.dropout(jax.random.clone(key), x, jnp.float32(0.25)))  # the layer calls it
  lstm = jdx.LSTM(3, 4, dropout=0.5, recurrent_dropout=0.5, rngs=nnx.Rngs(3))
  seq = jnp.ones((2, 5, 3))
  # By construction: lstm drops zero Python rates before any op, so training with rates 0 is the evaluation.
  assert_trees_equal(lstm(seq, deterministic=False, rngs=jax.random.clone(key), dropout=0.0, recurrent_dropout=0.0),
                     lstm(seq, deterministic=True))


def test_an_optax_schedule_drives_the_drop_fraction_step_by_step_in_one_compiled_scan():
  steps = 12
  warmup = optax.linear_schedule(0.0, 0.55, transition_steps=steps - 1)
  layer = jdl.Dropout(0.1)  # the attribute is the rate when none is given at call time

  @jax.jit
  def train(key):
    def step(_, i):
      y = layer.apply({}, jnp.ones(N), deterministic=False, rngs={"dropout": jax.random.fold_in(key, i)},
                      rate=warmup(i))
      return None, jnp.mean(y == 0)

    return jax.lax.scan(step, None, jnp.arange(steps))[1]

  fractions = train(jax.random.key(4))
  rates = np.asarray([warmup(i) for i in range(steps)])
  within_5_sigma(fractions, rates)
  assert fractions[0] == 0 and fractions[-1] > 0.45  # it moved: from no dropout to 0.55


@pytest.mark.parametrize(("schedule", "expected"), [
    (jaxdrop.early_dropout(0.4, 3), [0.4, 0.4, 0.4, 0.0, 0.0, 0.0]),
    (jaxdrop.late_dropout(0.4, 3), [0.0, 0.0, 0.0, 0.4, 0.4, 0.4]),
])
def test_early_and_late_dropout(schedule, expected):
  np.testing.assert_allclose([schedule(i) for i in range(6)], expected, rtol=1e-6)
  keys = jax.random.split(jax.random.key(5), 6)
  with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix the int32 step with floats
    fractions = jax.vmap(lambda k, i: jnp.mean(jaxdrop.dropout(k, jnp.ones(N), schedule(i)) == 0))(keys,
                                                                                                 jnp.arange(6))
  within_5_sigma(fractions, expected)


def test_drop_path_rates_rise_linearly_like_timm():
  np.testing.assert_allclose(jaxdrop.drop_path_rates(0.1, 5), [0.0, 0.025, 0.05, 0.075, 0.1])
  np.testing.assert_allclose(jaxdrop.drop_path_rates(0.3, 3, start=0.1), [0.1, 0.2, 0.3])
  assert jaxdrop.drop_path_rates(0.2, 1) == (0.2,)
  with pytest.raises(ValueError, match="depth must be a positive integer"):
    jaxdrop.drop_path_rates(0.1, 0)
  with pytest.raises(ValueError, match="max_rate must be in"):
    jaxdrop.drop_path_rates(1.5, 4)


class Residual(nn.Module):
  """``x + drop_path(1)``: the scan's per-layer output is the branch, 0 where the layer was dropped."""

  @nn.compact
  def __call__(self, x, rate):
    branch = jdl.DropPath(0.0)(jnp.ones_like(x), deterministic=False, rate=rate)
    return x + branch, branch


def test_per_depth_rates_through_an_nn_scan_stack():
  depth = 6
  rates = jnp.asarray(jaxdrop.drop_path_rates(0.6, depth))
  stack = nn.scan(Residual, variable_broadcast="params", split_rngs={"params": False, "dropout": True},
                  in_axes=0, length=depth)()
  _, branches = jax.jit(lambda key: stack.apply({}, jnp.zeros((N, 1)), rates, rngs={"dropout": key}))(
      jax.random.key(6))
  within_5_sigma(np.mean(np.asarray(branches)[..., 0] == 0, axis=1), rates)
