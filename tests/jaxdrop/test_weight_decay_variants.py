"""Weight decay beyond optax: independent decay, decay schedules, cautious decay (issue 22, item 1).

The reference is the update rule written out in NumPy (float64): Loshchilov & Hutter (2019), Algorithm 2,
``x <- x - eta_t * (alpha * u_t + lambda * x)`` with ``lr_t = eta_t * alpha``; Chen et al. (2025,
arXiv:2510.12402), Algorithm 1, ``x <- x - eta_t * (u_t + lambda * I(u_t * x >= 0) * x)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from tests._asserts import assert_close_ulp, assert_trees_equal

adam_promotion = jax.numpy_dtype_promotion("standard")  # optax's Adam bias correction mixes float and int32


def problem():
  kp, kb, kt, ku = jax.random.split(jax.random.key(3), 4)
  params = {"kernel": jax.random.normal(kp, (3, 4)), "bias": jax.random.normal(kb, (4,))}
  target = {"kernel": jax.random.normal(kt, (3, 4)), "bias": jax.random.normal(ku, (4,))}
  loss = lambda p: sum(0.5 * jnp.sum((p[k] - target[k]) ** 2) for k in p)  # gradient p - target
  return params, target, loss


def run(tx, params, loss, n):
  state = tx.init(params)
  for _ in range(n):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


# optax computes Adam's bias correction 1 - b**t in float32, b rounded to float32 (0.999 -> 0.99900001): a
# relative change of 1.3e-5 at t = 1, which the reference reproduces to keep its tolerance at a few ulp.
B1, B2 = float(np.float32(0.9)), float(np.float32(0.999))


def reference(params, target, n, *, adam, lr, rates, momentum=None, coupled=False, peak=None, cautious=False):
  """The rule by hand, float64. ``lr(t)``; ``rates(t)``: per-leaf decay coefficients (0: not decayed)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t in range(n):
    for k, w in p.items():
      rate = rates(t)[k]
      d = (w - np.asarray(target[k], np.float64)) + (rate * w if coupled else 0.0)
      if adam:  # optax.scale_by_adam, eps_root = 0
        m[k] = 0.9 * m[k] + 0.1 * d
        v2[k] = 0.999 * v2[k] + 0.001 * d**2
        u = (m[k] / (1 - B1 ** (t + 1))) / (np.sqrt(v2[k] / (1 - B2 ** (t + 1))) + 1e-8)
      elif momentum is not None:  # torch.optim.SGD's buffer (optax.trace): buf = momentum * buf + d
        m[k] = momentum * m[k] + d
        u = m[k]
      else:
        u = d
      scale = 0.0 if coupled else (lr(t) if peak is None else lr(t) / peak)  # eta_t for independent decay
      agree = (u * w >= 0) if cautious else 1.0
      p[k] = w - lr(t) * u - scale * rate * agree * w
  return p


def assert_matches_reference(got, want):
  # float32 steps against the float64 rule: a few ulp of each leaf's largest value.
  assert_close_ulp(got, {k: v.astype(np.float32) for k, v in want.items()}, ulp=8, scale="max")


SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 0.05, warmup_steps=2, decay_steps=6)  # peak 0.05
CONSTANT = lambda t: 0.05


# --- independent decay -------------------------------------------------------------


@adam_promotion
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant-lr", "schedule-lr"])
@pytest.mark.parametrize("adam", [True, False], ids=["adamw", "sgdw-momentum"])
def test_independent_decay_follows_the_rule_by_hand(adam, scheduled):
  params, target, loss = problem()
  lr, lr_fn = (SCHEDULE, lambda t: float(SCHEDULE(t))) if scheduled else (0.05, CONSTANT)
  peak = {"peak_learning_rate": 0.05} if scheduled else {}  # a constant lr is its own peak: eta_t = 1
  if adam:
    tx = jaxdrop.adamw(lr, weight_decay=0.3, independent=True, **peak)
  else:
    tx = jaxdrop.sgd(lr, momentum=0.9, weight_decay=0.3, decoupled=True, independent=True, **peak)
  want = reference(params, target, 4, adam=adam, lr=lr_fn, rates=lambda t: {"kernel": 0.3, "bias": 0.0},
                   momentum=None if adam else 0.9, peak=0.05)
  assert_matches_reference(run(tx, params, loss, 4), want)
  # ... and not the lr-coupled rule (decay 0.05 * 0.3 per step instead of 0.3): the check can fail.
  coupled = reference(params, target, 4, adam=adam, lr=lr_fn, rates=lambda t: {"kernel": 0.3, "bias": 0.0},
                      momentum=None if adam else 0.9)
  assert not np.allclose(want["kernel"], coupled["kernel"], rtol=1e-3)


@adam_promotion
def test_independent_at_a_constant_lr_is_coupled_decay_with_the_coefficient_over_lr():
  params, _, loss = problem()
  lr, wd = 0.05, 0.3
  independent = run(jaxdrop.adamw(lr, weight_decay=wd, independent=True), params, loss, 3)
  # Bitwise by construction: independent decay is optax.adamw with weight_decay = wd / lr (the same float).
  assert_trees_equal(independent, run(jaxdrop.adamw(lr, weight_decay=wd / lr), params, loss, 3))
  sgdw = lambda wd, **kw: jaxdrop.sgd(lr, momentum=0.9, weight_decay=wd, decoupled=True, **kw)
  assert_trees_equal(run(sgdw(wd, independent=True), params, loss, 3), run(sgdw(wd / lr), params, loss, 3))
  # A NumPy scalar learning rate is a number, its own peak, as a Python float is (np.float32(0.05) is not 0.05
  # exactly, so wd / lr differs in its last bits: a few ulp).
  assert_close_ulp(run(jaxdrop.adamw(np.float32(lr), weight_decay=wd, independent=True), params, loss, 3),
                   independent, ulp=4, scale="max")
  # With a schedule, the rescaled coefficient is wd / peak_learning_rate (again the same float: bitwise).
  assert_trees_equal(run(jaxdrop.adamw(SCHEDULE, weight_decay=wd, independent=True, peak_learning_rate=0.05),
                         params, loss, 3),
                     run(jaxdrop.adamw(SCHEDULE, weight_decay=wd / 0.05), params, loss, 3))
  # Under inject_hyperparams, wd / peak is a float32 division in the jitted program, not Python's float64
  # one: a few ulp, not bitwise. (Both sides jitted: jit against eager moves Adam's 1 - b2**t by an ulp,
  # which its 1e-3 size turns into ~1e-4 relative.)
  def injected(**kw):
    wrapped = optax.inject_hyperparams(jaxdrop.adamw)(learning_rate=lr, **kw)
    state, p, step = wrapped.init(params), params, jax.jit(wrapped.update)
    for _ in range(3):
      updates, state = step(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    return p

  assert_close_ulp(injected(weight_decay=wd, independent=True, peak_learning_rate=lr),
                   injected(weight_decay=wd / lr), ulp=4, scale="max")


@adam_promotion
def test_the_decay_follows_the_schedule_multiplier():
  params, _, _ = problem()
  zero = lambda p: 0.0 * sum(jnp.sum(v) for v in p.values())  # Adam's direction is then exactly 0
  tx = jaxdrop.adamw(SCHEDULE, weight_decay=0.4, independent=True, peak_learning_rate=0.05)
  coupled = jaxdrop.adamw(SCHEDULE, weight_decay=0.4)
  state, cstate, p, cp = tx.init(params), coupled.init(params), params, params
  for t in range(6):
    updates, state = tx.update(jax.grad(zero)(p), state, p)
    cupdates, cstate = coupled.update(jax.grad(zero)(cp), cstate, cp)
    new, cnew = optax.apply_updates(p, updates), optax.apply_updates(cp, cupdates)
    eta = float(SCHEDULE(t)) / 0.05
    if t == 0:  # warm-up from 0: eta_0 = 0, so not decayed at all (w - 0 * (0 + c * w) = w, exactly)
      assert_trees_equal(new, p)
    np.testing.assert_allclose(new["kernel"], (1 - eta * 0.4) * np.asarray(p["kernel"]), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(cnew["kernel"], (1 - eta * 0.05 * 0.4) * np.asarray(cp["kernel"]),
                               rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(new["bias"], params["bias"])  # the default mask: biases never decayed
    p, cp = new, cnew
  assert float(SCHEDULE(2)) == float(np.float32(0.05))  # the peak is reached within the steps checked


# --- weight_decay as a schedule, in every form ----------------------------------------

WD = optax.linear_schedule(0.5, 0.1, transition_steps=3)
WD_FN = lambda t: float(WD(t))
FORMS = {  # (factory of a decay schedule, reference options, per-leaf rates from the decay at step t)
    "add_weight_decay+sgd": (lambda wd: optax.chain(jaxdrop.add_weight_decay(wd), optax.sgd(0.05)),
                             {"adam": False, "coupled": True}, lambda r: {"kernel": r, "bias": 0.0}),
    "sgd": (lambda wd: jaxdrop.sgd(0.05, weight_decay=wd), {"adam": False, "coupled": True},
            lambda r: {"kernel": r, "bias": 0.0}),
    "sgd-momentum": (lambda wd: jaxdrop.sgd(0.05, momentum=0.9, weight_decay=wd),
                     {"adam": False, "coupled": True, "momentum": 0.9}, lambda r: {"kernel": r, "bias": 0.0}),
    "sgdw": (lambda wd: jaxdrop.sgd(0.05, momentum=0.9, weight_decay=wd, decoupled=True),
             {"adam": False, "momentum": 0.9}, lambda r: {"kernel": r, "bias": 0.0}),
    "adam": (lambda wd: jaxdrop.adam(0.05, weight_decay=wd), {"adam": True, "coupled": True},
             lambda r: {"kernel": r, "bias": 0.0}),
    "adamw": (lambda wd: jaxdrop.adamw(0.05, weight_decay=wd), {"adam": True},
              lambda r: {"kernel": r, "bias": 0.0}),
    "adamw-groups": (lambda wd: jaxdrop.adamw(0.05, weight_decay=0.2, groups={"bias": wd}), {"adam": True},
                     lambda r: {"kernel": 0.2, "bias": r}),
    "adamw-independent-cautious": (
        lambda wd: jaxdrop.adamw(SCHEDULE, weight_decay=wd, independent=True, peak_learning_rate=0.05,
                                 cautious=True),
        {"adam": True, "peak": 0.05, "cautious": True}, lambda r: {"kernel": r, "bias": 0.0}),
    "sgdw-cautious-groups": (
        lambda wd: jaxdrop.sgd(0.05, momentum=0.9, weight_decay=wd, decoupled=True, cautious=True,
                               groups={"bias": wd}),
        {"adam": False, "momentum": 0.9, "cautious": True}, lambda r: {"kernel": r, "bias": r}),
}


@adam_promotion
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_a_weight_decay_schedule_works_in_every_form(form):
  factory, options, rates = form
  params, target, loss = problem()
  lr = (lambda t: float(SCHEDULE(t))) if "peak" in options else CONSTANT
  want = reference(params, target, 4, lr=lr, rates=lambda t: rates(WD_FN(t)), **options)
  assert_matches_reference(run(factory(WD), params, loss, 4), want)
  frozen = reference(params, target, 4, lr=lr, rates=lambda t: rates(WD_FN(0)), **options)
  assert not all(np.allclose(want[k], frozen[k], rtol=1e-4) for k in want)  # the schedule's changes show


# --- cautious decay -------------------------------------------------------------------


@adam_promotion
@pytest.mark.parametrize("adam", [True, False], ids=["adamw", "sgdw-momentum"])
def test_cautious_decay_leaves_exactly_the_disagreeing_coordinates_undecayed(adam):
  params, target, loss = problem()
  grads = jax.grad(loss)(params)
  build = ((lambda **kw: jaxdrop.adamw(0.05, **kw)) if adam
           else (lambda **kw: jaxdrop.sgd(0.05, momentum=0.9, decoupled=True, **kw)))

  def updates(tx):
    return tx.update(grads, tx.init(params), params)[0]["kernel"]

  plain, decayed, cautious = (updates(build(weight_decay=0.0)), updates(build(weight_decay=0.3)),
                              updates(build(weight_decay=0.3, cautious=True)))
  w = np.asarray(params["kernel"])
  agree = np.sign(-np.asarray(plain)) * np.sign(w) >= 0  # the direction u = -update / lr
  assert 0 < agree.sum() < agree.size  # both kinds of coordinates are there
  # Bitwise by construction: the same optax transforms, and jnp.where picks either the undecayed direction
  # or optax's own u + wd * w before the same scaling by the learning rate.
  np.testing.assert_array_equal(np.asarray(cautious)[~agree], np.asarray(plain)[~agree])
  np.testing.assert_array_equal(np.asarray(cautious)[agree], np.asarray(decayed)[agree])
  want = reference(params, target, 3, adam=adam, lr=CONSTANT, rates=lambda t: {"kernel": 0.3, "bias": 0.0},
                   momentum=None if adam else 0.9, cautious=True)
  assert_matches_reference(run(build(weight_decay=0.3, cautious=True), params, loss, 3), want)


def test_cautious_ties_decay_and_tiny_disagreeing_values_do_not():
  params = {"kernel": jnp.array([1.0, -1.0, 1e-30, 2.0]), "bias": jnp.ones(4)}
  grads = {"kernel": jnp.array([0.0, 0.0, -1e-30, -1.0]), "bias": jnp.zeros(4)}
  tx = jaxdrop.sgd(1.0, weight_decay=0.5, decoupled=True, cautious=True)
  updates = np.asarray(tx.update(grads, tx.init(params), params)[0]["kernel"])
  # u = 0 is a tie, u * w >= 0 (the paper's indicator): decayed. 1e-30 * -1e-30 underflows to -0.0 in float32,
  # but the signs disagree: not decayed (a product test would decay it).
  np.testing.assert_array_equal(updates, np.array([-0.5, 0.5, 1e-30, 1.0], np.float32))


@adam_promotion
def test_variants_keep_the_mask_groups_and_the_state_of_optax_adamw():
  params, target, loss = problem()
  grads = jax.grad(loss)(params)
  plain = optax.adamw(0.05, weight_decay=0.0)
  base = plain.update(grads, plain.init(params), params)[0]
  structure = jax.tree.structure(jaxdrop.adamw(0.05).init(params))
  for kw in ({"independent": True}, {"cautious": True}, {"independent": True, "cautious": True}):
    tx = jaxdrop.adamw(0.05, weight_decay=0.3, **kw)
    assert jax.tree.structure(tx.init(params)) == structure  # checkpoints of one form load into another
    # The bias is outside the default mask: bitwise optax's undecayed update (the same transforms).
    np.testing.assert_array_equal(tx.update(grads, tx.init(params), params)[0]["bias"], base["bias"])
  tx = jaxdrop.adamw(0.05, weight_decay=0.3, groups={"bias": 0.1}, independent=True, cautious=True,
                     mask=jaxdrop.all_params)
  want = reference(params, target, 3, adam=True, lr=CONSTANT, rates=lambda t: {"kernel": 0.3, "bias": 0.1},
                   peak=0.05, cautious=True)
  assert_matches_reference(run(tx, params, loss, 3), want)


@adam_promotion
@pytest.mark.parametrize("adam", [True, False], ids=["adamw", "sgdw"])
def test_inject_hyperparams_schedules_them_and_compiles_once(adam):
  params, target, loss = problem()
  factory = jaxdrop.adamw if adam else jaxdrop.sgd
  extra = {} if adam else {"momentum": 0.9, "decoupled": True}
  wrapped = optax.inject_hyperparams(factory)(learning_rate=SCHEDULE, weight_decay=WD, independent=True,
                                              peak_learning_rate=0.05, cautious=True, **extra)
  traces = []

  @jax.jit
  def step(p, s):
    traces.append(1)
    updates, s = wrapped.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, updates), s

  p, state = params, wrapped.init(params)
  for _ in range(4):
    p, state = step(p, state)
  assert len(traces) == 1
  want = reference(params, target, 4, adam=adam, lr=lambda t: float(SCHEDULE(t)), peak=0.05, cautious=True,
                   rates=lambda t: {"kernel": WD_FN(t), "bias": 0.0}, momentum=None if adam else 0.9)
  assert_matches_reference(p, want)
  same, _ = step(p, state)
  halved_peak = state.hyperparams["peak_learning_rate"] / 2  # the same dtype and weak type: no retrace
  doubled = state._replace(hyperparams={**state.hyperparams, "peak_learning_rate": halved_peak})
  twice, _ = step(p, doubled)  # twice the decay, the same compiled step
  assert len(traces) == 1 and not np.allclose(twice["kernel"], same["kernel"], rtol=1e-4)


# --- bad inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: jaxdrop.adamw(1e-3, independent=1), TypeError, "independent must be True or False, got int 1"),
    (lambda: jaxdrop.adamw(1e-3, cautious="yes"), TypeError, "cautious must be True or False, got str"),
    (lambda: jaxdrop.add_weight_decay(0.1, cautious=None), TypeError, "cautious must be True or False"),
    (lambda: jaxdrop.sgd(0.1, weight_decay=0.1, independent=True), ValueError,
     "independent=True needs decoupled=True"),
    (lambda: jaxdrop.sgd(0.1, weight_decay=0.1, cautious=True), ValueError,
     "cautious=True needs decoupled=True"),
    (lambda: jaxdrop.adamw(1e-3, peak_learning_rate=1e-3), ValueError,
     "peak_learning_rate is only read with independent=True"),
    (lambda: jaxdrop.sgd(0.1, decoupled=True, peak_learning_rate=0.1), ValueError,
     "peak_learning_rate is only read with independent=True"),
    (lambda: jaxdrop.adamw(SCHEDULE, independent=True), ValueError,
     "independent=True with a learning_rate schedule .* needs peak_learning_rate="),
    (lambda: jaxdrop.adamw(jnp.asarray(1e-3), independent=True), ValueError, "needs peak_learning_rate="),
    (lambda: jaxdrop.adamw(0.0, independent=True), ValueError,
     "independent=True with learning_rate=0 needs peak_learning_rate > 0"),
    (lambda: jaxdrop.adamw(SCHEDULE, independent=True, peak_learning_rate=0.0), ValueError,
     "peak_learning_rate must be a finite number > 0, got peak_learning_rate=0.0"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate=-1e-3), ValueError,
     "peak_learning_rate must be a finite number > 0"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate=float("nan")), ValueError,
     "peak_learning_rate must be a finite number > 0"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate=float("inf")), ValueError,
     "peak_learning_rate must be a finite number > 0"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate="1e-3"), TypeError,
     "peak_learning_rate must be a real number .*got str '1e-3'"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate=True), TypeError,
     "peak_learning_rate must be a real number .*the bool True"),
    (lambda: jaxdrop.adamw(SCHEDULE, independent=True, peak_learning_rate=SCHEDULE), TypeError,
     "peak_learning_rate .*cannot be a schedule"),
    (lambda: jaxdrop.adamw(1e-3, independent=True, peak_learning_rate=np.array([1e-3, 1e-2])), ValueError,
     "peak_learning_rate must be a scalar"),
    (lambda: jaxdrop.adamw(1e-3, weight_decay=-0.1, independent=True), ValueError,
     "weight_decay must be a finite number >= 0"),
    (lambda: jaxdrop.adamw(1e-3, groups={"bias": "0.1"}, cautious=True), TypeError,
     "weight_decay must be a real number .*for groups\\[0\\]"),
    (lambda: optax.inject_hyperparams(jaxdrop.adamw)(learning_rate=1e-3, independent=True).init(
        {"w": jnp.ones(2)}), ValueError, "needs peak_learning_rate="),
])
def test_bad_inputs_give_one_line_errors_naming_the_argument(build, error, message):
  with pytest.raises(error, match=message) as info:
    build()
  assert "\n" not in str(info.value)


def test_cautious_refuses_complex_leaves_at_update():
  params = {"kernel": jnp.ones((2, 2), jnp.complex64)}
  tx = jaxdrop.add_weight_decay(0.1, cautious=True)
  with pytest.raises(TypeError, match="cautious=True needs real parameters, got a leaf of dtype complex64"):
    tx.update(params, tx.init(params), params)
