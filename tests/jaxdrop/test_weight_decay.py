"""Weight decay chains and the max-norm constraint."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from tests._asserts import assert_close_ulp, assert_trees_close, assert_trees_equal


def problem():
  kx, kw, kb = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (16, 5))
  y = jnp.sum(x, axis=1, keepdims=True)
  params = {"kernel": jax.random.normal(kw, (5, 1)), "bias": jax.random.normal(kb, (1,))}
  loss = lambda p: jnp.mean((x @ p["kernel"] + p["bias"][None] - y) ** 2) / 2
  return params, loss


def step(tx, params, loss, n=1):
  state = tx.init(params)
  for _ in range(n):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_coupled_sgd_step_equals_step_on_loss_plus_l2_penalty():
  params, loss = problem()
  lam, lr = 0.3, 0.1
  decayed = step(jaxdrop.sgd(lr, weight_decay=lam), params, loss)
  penalized = step(optax.sgd(lr), params, lambda p: loss(p) + lam * jaxdrop.l2_penalty(p))
  assert_trees_close(decayed, penalized, rtol=1e-6, atol=1e-7)
  # tutorial 004: w <- (1 - lr * lam) w - lr * grad
  g = jax.grad(loss)(params)
  np.testing.assert_allclose(decayed["kernel"], (1 - lr * lam) * params["kernel"] - lr * g["kernel"], rtol=1e-6)


def test_bias_is_not_decayed_by_default_but_can_be():
  params, _ = problem()
  zero_loss = lambda p: 0.0 * jnp.sum(p["bias"])
  out = step(jaxdrop.sgd(0.5, weight_decay=0.2), params, zero_loss)
  np.testing.assert_array_equal(out["bias"], params["bias"])  # exact: not decayed, zero gradient: b - 0.5 * 0
  np.testing.assert_allclose(out["kernel"], params["kernel"] * 0.9, rtol=1e-6)
  out_all = step(jaxdrop.sgd(0.5, weight_decay=0.2, mask=jaxdrop.all_params), params, zero_loss)
  np.testing.assert_allclose(out_all["bias"], params["bias"] * 0.9, rtol=1e-6)


def test_coupled_momentum_matches_torch_sgd_rule():
  params, loss = problem()
  lr, lam, mu = 0.05, 0.1, 0.9
  out = step(jaxdrop.sgd(lr, momentum=mu, weight_decay=lam), params, loss, n=3)
  p, buf = dict(params), None  # torch.optim.SGD: d = g + lam * w (weights only); buf = mu * buf + d
  for _ in range(3):
    g = jax.grad(loss)(p)
    d = {"kernel": g["kernel"] + lam * p["kernel"], "bias": g["bias"]}
    buf = d if buf is None else jax.tree.map(lambda b, di: mu * b + di, buf, d)
    p = jax.tree.map(lambda w, b: w - lr * b, p, buf)
  assert_trees_close(out, p, rtol=1e-5, atol=1e-7)


def test_decoupled_equals_coupled_without_momentum_and_differs_with_it():
  params, loss = problem()
  a = step(jaxdrop.sgd(0.1, weight_decay=0.3, decoupled=True), params, loss, n=3)
  b = step(jaxdrop.sgd(0.1, weight_decay=0.3), params, loss, n=3)
  assert_trees_close(a, b, rtol=1e-6, atol=1e-7)
  c = step(jaxdrop.sgd(0.1, momentum=0.9, weight_decay=0.3, decoupled=True), params, loss, n=3)
  d = step(jaxdrop.sgd(0.1, momentum=0.9, weight_decay=0.3), params, loss, n=3)
  assert not np.allclose(c["kernel"], d["kernel"])
  # SGDW: buf = mu * buf + g; w <- w - lr * (buf + lam * w)
  p, buf = dict(params), None
  for _ in range(3):
    g = jax.grad(loss)(p)
    buf = g if buf is None else jax.tree.map(lambda bb, gg: 0.9 * bb + gg, buf, g)
    p = {"kernel": p["kernel"] - 0.1 * (buf["kernel"] + 0.3 * p["kernel"]), "bias": p["bias"] - 0.1 * buf["bias"]}
  assert_trees_close(c, p, rtol=1e-5, atol=1e-7)


@jax.numpy_dtype_promotion("standard")  # optax's Adam bias correction mixes float and int32
def test_adam_couples_and_adamw_decouples():
  params, loss = problem()
  coupled = step(jaxdrop.adam(1e-2, weight_decay=0.1), params, loss, n=2)
  expected = step(
      optax.chain(optax.add_decayed_weights(0.1, mask={"kernel": True, "bias": False}), optax.adam(1e-2)),
      params, loss, n=2,
  )
  # Bitwise by construction: jaxdrop.adam is this chain of the same optax transforms, run eagerly alike; only
  # the mask's form (a function vs a dict) differs.
  assert_trees_equal(coupled, expected)
  decoupled = step(jaxdrop.adamw(1e-2, weight_decay=0.1), params, loss, n=2)
  ref = step(optax.adamw(1e-2, weight_decay=0.1, mask={"kernel": True, "bias": False}), params, loss, n=2)
  assert_trees_equal(decoupled, ref)  # by construction: jaxdrop.adamw returns optax.adamw itself
  assert not np.allclose(coupled["kernel"], decoupled["kernel"])


def test_zero_decay_is_the_plain_optimizer_and_bad_values_raise():
  params, loss = problem()
  # Bitwise by construction: sgd without decay is optax.sgd behind an identity (masked) transform.
  assert_trees_equal(step(jaxdrop.sgd(0.1), params, loss), step(optax.sgd(0.1), params, loss))
  for bad in (-0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="weight_decay"):
      jaxdrop.sgd(0.1, weight_decay=bad)
  with pytest.raises(ValueError, match="weight_decay"):
    jaxdrop.adamw(0.1, weight_decay=-1.0)


def test_schedules_and_jit_compile_once():
  params, loss = problem()
  tx = jaxdrop.sgd(optax.linear_schedule(0.1, 0.0, 10), weight_decay=optax.constant_schedule(0.1))
  traces = []

  @jax.jit
  def train_step(p, s):
    traces.append(1)
    updates, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  state = tx.init(params)
  p1, state = train_step(params, state)
  p2, state = train_step(p1, state)
  assert len(traces) == 1 and p2["kernel"].dtype == jnp.float32


# --- max-norm ----------------------------------------------------------------------


def test_max_norm_projection_per_unit_and_inside_ball_unchanged():
  kernel = jax.random.normal(jax.random.key(1), (20, 6)) * jnp.array([[0.01, 0.1, 1, 2, 5, 10]])
  p = {"kernel": kernel, "bias": jnp.full((6,), 100.0)}
  out = jaxdrop.max_norm_projection(p, 3.0)
  norms = np.linalg.norm(np.asarray(kernel), axis=0)
  new_norms = np.linalg.norm(np.asarray(out["kernel"]), axis=0)
  np.testing.assert_allclose(new_norms, np.minimum(norms, 3.0), rtol=1e-6)
  inside = norms <= 3.0
  # Exact: columns inside the ball are multiplied by a factor of exactly 1; the bias is not projected.
  np.testing.assert_array_equal(np.asarray(out["kernel"])[:, inside], np.asarray(kernel)[:, inside])
  np.testing.assert_array_equal(out["bias"], p["bias"])
  conv = jax.random.normal(jax.random.key(2), (3, 3, 4, 8)) * 10
  conv_out = jaxdrop.max_norm_projection({"kernel": conv}, 1.0)["kernel"]
  np.testing.assert_allclose(np.linalg.norm(np.asarray(conv_out).reshape(-1, 8), axis=0), 1.0, rtol=1e-6)


def test_max_norm_transform_after_optimizer():
  params, loss = problem()
  params = {"kernel": params["kernel"] * 10, "bias": params["bias"]}
  tx = optax.chain(jaxdrop.sgd(0.1, momentum=0.9), jaxdrop.max_norm(1.0))
  out = step(tx, params, loss, n=3)
  assert float(jnp.linalg.norm(out["kernel"])) <= 1.0 + 1e-6
  unconstrained = step(jaxdrop.sgd(0.1, momentum=0.9), params, loss, n=1)
  constrained = step(tx, params, loss, n=1)
  expected = jaxdrop.max_norm_projection(unconstrained, 1.0)
  assert_trees_close(constrained, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(constrained["bias"], unconstrained["bias"])  # max_norm passes biases through


def test_max_norm_errors():
  with pytest.raises(ValueError, match="max_value"):
    jaxdrop.max_norm(0.0)
  tx = jaxdrop.max_norm(1.0)
  with pytest.raises(ValueError, match="params"):
    tx.update({"kernel": jnp.ones((2, 2))}, tx.init(None))


def test_max_norm_of_an_nn_scan_stack_is_per_layer_as_each_layer_alone():
  import flax.linen as nn

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      return nn.Dense(8)(x), None

  stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)()
  params = stack.init(jax.random.key(0), jnp.ones((2, 8)), None)["params"]
  params = jax.tree.map(lambda a: a * 4, params)  # every unit over the limit
  kernel = params["Dense_0"]["kernel"]
  assert kernel.shape == (3, 8, 8)
  out = jaxdrop.max_norm_projection(params, 1.0)["Dense_0"]["kernel"]
  for layer in range(3):  # the projection of the layer alone (norms reduced over another shape: a few ulp)
    alone = jaxdrop.max_norm_projection({"kernel": kernel[layer], "bias": jnp.zeros(8)}, 1.0)["kernel"]
    assert_close_ulp(out[layer], alone, ulp=4)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), 1.0, rtol=1e-6)  # at the limit, per layer
  tx = jaxdrop.max_norm(1.0)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  moved = optax.apply_updates(params, updates)["Dense_0"]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(np.asarray(moved), axis=1), 1.0, rtol=1e-6)


def test_max_norm_of_attention_kernels_is_per_head_and_unit():
  import flax.linen as nn

  mha = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16)
  params = mha.init(jax.random.key(0), jnp.ones((1, 3, 12)))["params"]
  params = jax.tree.map(lambda a: a * 10, params)
  out = jaxdrop.max_norm_projection(params, 1.0)
  query = np.asarray(out["query"]["kernel"])  # (features, heads, head_dim): fan-in is features only
  np.testing.assert_allclose(np.linalg.norm(query, axis=0), 1.0, rtol=1e-6)
  proj = np.asarray(out["out"]["kernel"])  # (heads, head_dim, features): fan-in is heads and head_dim
  np.testing.assert_allclose(np.linalg.norm(proj.reshape(-1, proj.shape[-1]), axis=0), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("shape", "bias", "axes"), [
    ((6, 4), (4,), (0,)), ((6, 4), None, (0,)), ((3, 3, 2, 4), (4,), (0, 1, 2)), ((5, 6, 4), (5, 4), (1,)),
    ((2, 5, 6, 4), (2, 5, 4), (2,)), ((5, 3, 3, 2, 4), (5, 4), (1, 2, 3)), ((12, 4, 3), (4, 3), (0,)),
    ((4, 3, 12), (12,), (0, 1)), ((6, 12, 4, 3), (6, 4, 3), (1,)),
])
def test_fan_in_axes_read_the_layout_from_the_bias(shape, bias, axes):
  from jaxdrop._max_norm import fan_in_axes

  assert fan_in_axes(shape, bias) == axes


@pytest.mark.parametrize("decoupled", [False, True])
def test_sgd_wraps_in_inject_hyperparams_and_its_state_does_not_depend_on_the_decay(decoupled):
  params, loss = problem()
  grads = jax.grad(loss)(params)
  wrapped = optax.inject_hyperparams(jaxdrop.sgd, static_args=("decoupled",))(
      learning_rate=0.1, momentum=0.9, weight_decay=0.0, decoupled=decoupled)
  plain = jaxdrop.sgd(0.1, momentum=0.9, decoupled=decoupled)
  state = wrapped.init(params)
  assert jax.tree.structure(state.inner_state) == jax.tree.structure(plain.init(params))
  step = jax.jit(wrapped.update)
  updates, _ = step(grads, state, params)
  plain_updates, _ = plain.update(grads, plain.init(params), params)
  assert_trees_close(updates, plain_updates, rtol=1e-6, atol=0)
  state.hyperparams["weight_decay"] = jnp.asarray(0.5)  # now decaying, same compiled step
  decayed, _ = step(grads, state, params)
  assert not np.allclose(decayed["kernel"], updates["kernel"]) and np.allclose(decayed["bias"], updates["bias"])


def test_adam_states_match_with_and_without_inject_hyperparams_and_pass_mu_dtype():
  params, _ = problem()
  wrapped = optax.inject_hyperparams(jaxdrop.adam)(learning_rate=1e-3)
  assert jax.tree.structure(wrapped.init(params).inner_state) == jax.tree.structure(jaxdrop.adam(1e-3).init(params))
  for factory in (jaxdrop.adam, jaxdrop.adamw):
    mu = [leaf for leaf in jax.tree.leaves(factory(1e-3, mu_dtype=jnp.bfloat16).init(params))
          if getattr(leaf, "dtype", None) == jnp.bfloat16]
    assert len(mu) == 2  # the first moments of kernel and bias
  trace = jax.tree.leaves(jaxdrop.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16).init(params))
  assert {leaf.dtype for leaf in trace} == {jnp.dtype(jnp.bfloat16)}


def test_add_weight_decay_over_all_params_accepts_none_updates_as_optax():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  ours, theirs = jaxdrop.add_weight_decay(0.1, mask=jaxdrop.all_params), optax.add_decayed_weights(0.1)
  for updates in (None, {"kernel": jnp.ones((2, 2)), "bias": None}):
    assert_trees_equal(ours.update(updates, ours.init(params), params)[0],
                       theirs.update(updates, theirs.init(params), params)[0])


@pytest.mark.parametrize("bad", [np.float32(-0.1), np.float64(np.nan), jnp.asarray(-1.0), np.int64(-1)])
def test_negative_numpy_and_jax_scalars_are_refused(bad):
  with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
    jaxdrop.sgd(0.1, weight_decay=bad)
  with pytest.raises(ValueError, match="max_value must be > 0"):
    jaxdrop.max_norm(bad)


# --- hyperparameters checked at build (issue 17) ------------------------------------

DECAY_FACTORIES = {
    "add_weight_decay": lambda wd: jaxdrop.add_weight_decay(wd),
    "sgd": lambda wd: jaxdrop.sgd(0.1, weight_decay=wd),
    "sgd decoupled": lambda wd: jaxdrop.sgd(0.1, momentum=0.9, weight_decay=wd, decoupled=True),
    "adam": lambda wd: jaxdrop.adam(1e-3, weight_decay=wd),
    "adamw": lambda wd: jaxdrop.adamw(1e-3, weight_decay=wd),
    "adamw with groups": lambda wd: jaxdrop.adamw(1e-3, weight_decay=wd, groups={"bias": 0.0}),
}
BAD_DECAYS = [
    (np.array([0.1, 0.2]), ValueError, "weight_decay must be a scalar .*shape \\(2,\\)"),
    (jnp.asarray([0.1]), ValueError, "weight_decay must be a scalar .*shape \\(1,\\)"),
    (1j, TypeError, "weight_decay must be a real number or a schedule .*got complex 1j"),
    (np.complex64(1), TypeError, "weight_decay must be a real number .*dtype complex64"),
    (True, TypeError, "weight_decay must be a real number .*got the bool True"),
    (np.bool_(False), TypeError, "weight_decay must be a real number .*got the bool"),
    (np.asarray(True), TypeError, "weight_decay must be a real number .*dtype bool"),
    ("0.1", TypeError, "weight_decay must be a real number .*got str '0.1'"),
    (None, TypeError, "weight_decay must be a real number .*got NoneType None"),
    ([0.1], TypeError, "weight_decay must be a real number .*got list \\[0.1\\]"),
]


@pytest.mark.parametrize("factory", DECAY_FACTORIES.values(), ids=DECAY_FACTORIES.keys())
@pytest.mark.parametrize(("bad", "error", "message"), BAD_DECAYS, ids=[repr(b[0]) for b in BAD_DECAYS])
def test_bad_weight_decays_are_refused_at_build_naming_the_argument(factory, bad, error, message):
  with pytest.raises(error, match=message):
    factory(bad)


@pytest.mark.parametrize(("bad", "error", "message"), BAD_DECAYS, ids=[repr(b[0]) for b in BAD_DECAYS])
def test_bad_group_rates_are_refused_naming_the_group(bad, error, message):
  where = "for groups\\[1\\] \\('kernel'\\)"
  with pytest.raises(error, match=f"{message}.*{where}"):
    jaxdrop.add_weight_decay(0.1, groups=[("bias", 0.0), ("kernel", bad)])
  with pytest.raises(error, match=f"{message}.*{where}"):
    jaxdrop.sgd(0.1, weight_decay=0.1, groups={"bias": 0.0, "kernel": bad})
  with pytest.raises(ValueError, match=f"weight_decay must be a finite number >= 0, got weight_decay=-1.0 {where}"):
    jaxdrop.adamw(0.1, groups={"bias": 0.0, "kernel": -1.0})


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: jaxdrop.sgd("0.1"), TypeError, "learning_rate must be a real number or a schedule .*str"),
    (lambda: jaxdrop.sgd(True), TypeError, "learning_rate .*got the bool True"),
    (lambda: jaxdrop.sgd(None), TypeError, "learning_rate .*NoneType"),
    (lambda: jaxdrop.adam(np.array([1e-3, 1e-2])), ValueError, "learning_rate must be a scalar"),
    (lambda: jaxdrop.adamw(-1e-3), ValueError, "learning_rate must be a finite number >= 0"),
    (lambda: jaxdrop.sgd(float("nan")), ValueError, "learning_rate must be a finite number >= 0"),
    (lambda: jaxdrop.sgd(0.1, momentum=True), TypeError, "momentum must be a real number .*bool"),
    (lambda: jaxdrop.sgd(0.1, momentum="0.9"), TypeError, "momentum must be a real number .*str"),
    (lambda: jaxdrop.sgd(0.1, momentum=-0.5), ValueError, "momentum must be a finite number >= 0"),
    (lambda: jaxdrop.sgd(0.1, momentum=optax.constant_schedule(0.9)), TypeError,
     "momentum .*cannot be a schedule here .*optax.inject_hyperparams"),
    (lambda: jaxdrop.sgd(0.1, momentum=0.9, nesterov="yes"), TypeError, "nesterov must be True or False"),
    (lambda: jaxdrop.sgd(0.1, decoupled=1), TypeError, "decoupled must be True or False"),
    (lambda: jaxdrop.adam(1e-3, b1=1.0), ValueError, "b1 must be in \\[0, 1\\)"),
    (lambda: jaxdrop.adamw(1e-3, b2=-0.1), ValueError, "b2 must be in \\[0, 1\\)"),
    (lambda: jaxdrop.adamw(1e-3, b2=float("nan")), ValueError, "b2 must be in \\[0, 1\\)"),
    (lambda: jaxdrop.adam(1e-3, b1="0.9"), TypeError, "b1 must be a real number .*str"),
    (lambda: jaxdrop.adam(1e-3, eps=-1e-8), ValueError, "eps must be a finite number >= 0"),
    (lambda: jaxdrop.adamw(1e-3, eps=None), TypeError, "eps must be a real number .*NoneType"),
    (lambda: jaxdrop.max_norm("3"), TypeError, "max_value must be a real number .*got str '3'"),
    (lambda: jaxdrop.max_norm(True), TypeError, "max_value must be a real number .*bool"),
    (lambda: jaxdrop.max_norm(None), TypeError, "max_value must be a real number .*NoneType"),
    (lambda: jaxdrop.max_norm(np.array([1.0, 2.0])), ValueError, "max_value must be a scalar"),
    (lambda: jaxdrop.max_norm(float("nan")), ValueError, "max_value must be > 0"),
    (lambda: jaxdrop.max_norm(1 + 0j), TypeError, "max_value must be a real number .*complex"),
    (lambda: jaxdrop.max_norm(optax.constant_schedule(3.0)), TypeError, "max_value .*cannot be a schedule"),
    (lambda: jaxdrop.max_norm_projection({"kernel": jnp.ones((2, 2))}, "3"), TypeError, "max_value must be a real"),
])
def test_the_other_hyperparameters_follow_the_same_rule(build, error, message):
  with pytest.raises(error, match=message):
    build()


@jax.numpy_dtype_promotion("standard")  # optax's Adam bias correction mixes float and int32
@pytest.mark.parametrize("good", [0.1, np.float32(0.1), np.float64(0.1), np.asarray(0.1), jnp.asarray(0.1),
                                  jnp.asarray(0.1, jnp.bfloat16), 0, np.int64(0), jnp.asarray(1)],
                         ids=repr)
def test_real_scalars_of_every_kind_stay_accepted(good):
  params, loss = problem()
  for factory in DECAY_FACTORIES.values():
    step(factory(good), params, loss)
  step(jaxdrop.sgd(good, momentum=good, weight_decay=good), params, loss)
  step(jaxdrop.add_weight_decay(0.1, groups={"kernel": good}), params, loss)
  step(optax.chain(jaxdrop.sgd(0.1), jaxdrop.max_norm(good if float(good) > 0 else 1.0)), params, loss)


def test_a_decay_as_a_numpy_or_jax_scalar_is_the_float_decay():
  params, loss = problem()
  ref = step(jaxdrop.sgd(0.1, momentum=0.9, weight_decay=0.25), params, loss, n=2)
  for same in (np.float32(0.25), np.asarray(0.25, np.float32), jnp.asarray(0.25)):  # 0.25: exact in float32
    # The same float32 value multiplies the same arrays in the same program: bitwise equal by construction.
    assert_trees_equal(step(jaxdrop.sgd(0.1, momentum=0.9, weight_decay=same), params, loss, n=2), ref)


def test_traced_scalars_stay_accepted_and_traced_arrays_are_refused():
  params, loss = problem()
  grads = jax.grad(loss)(params)

  def updates(lr, momentum, wd, max_value):
    tx = optax.chain(jaxdrop.sgd(lr, momentum=momentum, weight_decay=wd), jaxdrop.max_norm(max_value))
    return tx.update(grads, tx.init(params), params)[0]

  traced = jax.jit(updates)(0.1, 0.9, 0.3, 0.5)
  concrete = updates(0.1, 0.9, 0.3, 0.5)
  assert_trees_close(traced, concrete, rtol=1e-6, atol=1e-7)  # jit vs eager: a few ulp
  with pytest.raises(ValueError, match="weight_decay must be a scalar"):
    jax.jit(updates)(0.1, 0.9, jnp.array([0.1, 0.2]), 0.5)
  with pytest.raises(TypeError, match="max_value must be a real number .*dtype bool"):
    jax.jit(updates)(0.1, 0.9, 0.3, True)  # a traced bool


@jax.numpy_dtype_promotion("standard")  # optax's Adam bias correction mixes float and int32
@pytest.mark.parametrize("factory, kwargs", [
    (jaxdrop.sgd, {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.3}),
    (jaxdrop.sgd, {"learning_rate": optax.linear_schedule(0.1, 0.0, 10), "weight_decay": 0.3, "decoupled": True,
                   "momentum": 0.9}),
    (jaxdrop.adam, {"learning_rate": 1e-2, "weight_decay": 0.3}),
    (jaxdrop.adamw, {"learning_rate": 1e-2, "weight_decay": 0.3, "groups": {"bias": 0.1}}),
    (jaxdrop.add_weight_decay, {"weight_decay": 0.3}),
    (jaxdrop.max_norm, {"max_value": 0.5}),
], ids=["sgd", "sgdw-schedule", "adam", "adamw-groups", "add_weight_decay", "max_norm"])
def test_inject_hyperparams_passes_arrays_and_keeps_working(factory, kwargs):
  params, loss = problem()
  grads = jax.grad(loss)(params)
  wrapped = optax.inject_hyperparams(factory)(**kwargs)
  state = wrapped.init(params)
  numeric = [name for name, value in kwargs.items() if isinstance(value, float)]
  for name in numeric:  # what the installed optax passes: 0-d float32 arrays (traced in a jitted update)
    value = state.hyperparams[name]
    assert isinstance(value, jax.Array) and value.shape == () and value.dtype == jnp.float32
  plain = factory(**kwargs)
  got = jax.jit(wrapped.update)(grads, state, params)[0]
  want = plain.update(grads, plain.init(params), params)[0]
  assert_trees_close(got, want, rtol=1e-6, atol=1e-7)  # jit vs eager: a few ulp


# --- max-norm gradient at zero ---------------------------------------------------------


def test_max_norm_projection_gradient_is_the_identity_at_an_all_zero_column():
  kernel = jnp.array([[0.0, 3.0, 0.1], [0.0, 4.0, 0.2]])  # columns: all zero, outside (norm 5), inside
  project = lambda k: jaxdrop.max_norm_projection({"kernel": k}, 1.0)["kernel"]
  jac = np.asarray(jax.jacobian(project)(kernel)).reshape(6, 6)  # rows: output (i, j); columns: input (k, l)
  assert np.all(np.isfinite(jac))
  idx = lambda cols: [i * 3 + j for i in range(2) for j in cols]
  inside = idx([0, 2])
  np.testing.assert_array_equal(jac[np.ix_(inside, inside)], np.eye(4))  # the identity, exactly
  np.testing.assert_array_equal(jac[np.ix_(inside, idx([1]))], 0)
  u = np.array([3.0, 4.0]) / 5  # outside: d(c w / |w|)/dw = c / |w| (I - u u^T), c = 1, |w| = 5
  np.testing.assert_allclose(jac[np.ix_(idx([1]), idx([1]))], (np.eye(2) - np.outer(u, u)) / 5, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(project(kernel)[:, 0], 0)  # the zero column stays zero
  zero = {"kernel": jnp.zeros((4, 3))}  # a whole zero kernel: grad of sum is all ones, not NaN
  g = jax.grad(lambda p: jnp.sum(jaxdrop.max_norm_projection(p, 3.0)["kernel"]))(zero)
  np.testing.assert_array_equal(g["kernel"], np.ones((4, 3), np.float32))


def test_max_norm_transform_gradient_is_the_identity_at_zero_parameters():
  params = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
  tx = jaxdrop.max_norm(1.0)

  def moved(updates):
    new, _ = tx.update(updates, tx.init(params), params)
    return optax.apply_updates(params, new)["kernel"]

  jac = np.asarray(jax.jacobian(moved)(jax.tree.map(jnp.zeros_like, params))["kernel"]).reshape(6, 6)
  np.testing.assert_array_equal(jac, np.eye(6))  # (0 + u) * 1 - 0 + 0 at u = 0: the identity, exactly


def test_max_norm_measures_complex_kernels_by_their_modulus():
  kernel = jnp.array([[3 + 4j, 0.1j], [0j, 0.2 + 0j]], jnp.complex64)  # column norms 5 and sqrt(0.05)
  out = np.asarray(jaxdrop.max_norm_projection({"kernel": kernel}, 1.0)["kernel"])
  np.testing.assert_allclose(out[:, 0], [0.6 + 0.8j, 0], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(out[:, 1], np.asarray(kernel)[:, 1])  # inside: bitwise unchanged
