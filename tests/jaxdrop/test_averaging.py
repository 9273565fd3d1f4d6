"""Weight averaging against the reference update rules, transcribed into NumPy (torch is not installed here).

References: timm/utils/model_ema.py (``ModelEmaV3.get_decay``, ``ModelEmaV3.apply_update_``, with
``torch.lerp``'s formula), torch/optim/swa_utils.py (``AveragedModel.update_parameters`` with
``get_swa_avg_fn``, ``SWALR.get_lr``, ``update_bn``) and torch/nn/modules/batchnorm.py
(``_BatchNorm.forward`` with ``momentum=None``: the cumulative average), and the SWA paper's cyclic rate
(Izmailov et al., 2018, eq. 2).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

import jaxdrop
from tests._asserts import assert_close_ulp


def timm_get_decay(step, decay, min_decay=0.0, update_after_step=0, use_warmup=False, warmup_gamma=1.0,
                   warmup_power=2 / 3):
  """timm/utils/model_ema.py, ModelEmaV3.get_decay, line for line."""
  step = max(0, step - update_after_step - 1)
  if step <= 0:
    return 0.0
  if use_warmup:
    d = 1 - (1 + step / warmup_gamma) ** -warmup_power
    return max(min(d, decay), min_decay)
  return decay


def torch_lerp(start, end, weight):
  """torch.lerp's CPU formula (aten/src/ATen/native/Lerp.h), in float32."""
  start, end, weight = np.float32(start), np.float32(end), np.float32(weight)
  return start + weight * (end - start) if weight < 0.5 else end - (end - start) * (np.float32(1) - weight)


def trajectory(steps, seed=0):
  """``(tx-independent) gradients``: a fixed random sequence, so the params after each step are known."""
  return np.asarray(jax.random.normal(jax.random.key(seed), (steps, 3)), np.float32)


def run(tx, grads, params):
  """Steps ``tx`` over ``grads`` (one jitted step); returns the params after each step and the final state."""
  state, seen = tx.init(params), []

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update({"w": g}, state, params)
    return optax.apply_updates(params, updates), state

  for g in grads:
    params, state = step(params, state, jnp.asarray(g))
    seen.append(np.asarray(params["w"]))
  return np.stack(seen), state


@pytest.mark.parametrize("use_warmup, update_after_step, min_decay",
                         [(False, 0, 0.0), (True, 0, 0.0), (True, 2, 0.3), (False, 3, 0.5)])
def test_ema_decay_is_timms_get_decay(use_warmup, update_after_step, min_decay):
  kw = {"min_decay": min_decay, "update_after_step": update_after_step, "use_warmup": use_warmup,
        "warmup_gamma": 2.0, "warmup_power": 0.75}
  steps = np.arange(1, 40)
  ours = np.asarray(jax.jit(jax.vmap(lambda s: jaxdrop.ema_decay(s, 0.9, **kw)))(steps))
  expected = np.asarray([timm_get_decay(int(s), 0.9, **kw) for s in steps], np.float32)
  np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=0)
  # The first update_after_step + 1 updates copy the parameters: a decay of exactly 0.
  assert np.all(ours[: update_after_step + 1] == 0) and np.all(ours[update_after_step + 1:] > 0)
  assert np.all(ours <= np.float32(0.9))


@pytest.mark.parametrize("use_warmup", [False, True])
def test_ema_follows_model_ema_v3_update(use_warmup):
  grads = trajectory(12)
  kw = {"update_after_step": 2, "use_warmup": use_warmup, "warmup_gamma": 1.0, "warmup_power": 2 / 3}
  tx = optax.chain(optax.sgd(0.1), jaxdrop.ema(0.8, **kw))
  params0 = {"w": jnp.asarray([1.0, -2.0, 0.5])}
  seen, state = run(tx, grads, params0)
  # timm: model_ema = ModelEmaV3(model) deep-copies the model; after each optimizer step num_updates += 1 and
  # model_ema.update(model, step=num_updates) lerps every float tensor with weight 1 - get_decay(step).
  expected = np.asarray(params0["w"], np.float32).copy()
  for step, p in enumerate(seen, start=1):
    w = np.float32(1) - np.float32(timm_get_decay(step, 0.8, **kw))
    expected = np.asarray([torch_lerp(e, q, w) for e, q in zip(expected, p, strict=True)], np.float32)
    if step <= 3:  # copies: exact (lerp with weight 1 returns the end point)
      np.testing.assert_array_equal(expected, p)
  assert int(state[1].step) == 12
  assert_close_ulp(np.asarray(jaxdrop.averaged_params(state)["w"]), expected, ulp=8, scale="max")
  # The average lags: it is not the final parameters.
  assert np.max(np.abs(expected - seen[-1])) > 1e-3


def test_swa_is_the_equal_weight_mean_of_the_snapshots():
  grads = trajectory(11, seed=1)
  tx = optax.chain(optax.sgd(0.3, momentum=0.9), jaxdrop.swa(start=3, frequency=2))
  seen, state = run(tx, grads, {"w": jnp.zeros(3)})
  swa_state = state[1]
  snapshots = seen[2::2]  # after updates 3, 5, 7, 9, 11
  assert int(swa_state.n_averaged) == len(snapshots) == 5
  # torch's AveragedModel.update_parameters: copy when n_averaged == 0, else avg + (p - avg) / (n + 1).
  avg = None
  for n, p in enumerate(snapshots):
    avg = p.copy() if n == 0 else (avg + (p - avg) / np.float32(n + 1)).astype(np.float32)
  assert_close_ulp(np.asarray(swa_state.mean["w"]), avg, ulp=4, scale="max")
  assert_close_ulp(np.asarray(swa_state.mean["w"]), snapshots.astype(np.float64).mean(0).astype(np.float32),
                   ulp=16, scale="max")


def test_swa_holds_the_current_params_before_its_first_snapshot():
  grads = trajectory(4, seed=2)
  seen, state = run(optax.chain(optax.sgd(0.1), jaxdrop.swa(start=5)), grads, {"w": jnp.ones(3)})
  assert int(state[1].n_averaged) == 0
  # The same apply_updates as the loop's, on the same values: equal by construction.
  np.testing.assert_array_equal(np.asarray(jaxdrop.averaged_params(state)["w"]), seen[-1])


def test_the_average_of_a_jitted_train_state_is_its_params_after_each_step():
  """swa(start=1, frequency=1) after one step, and ema(0.0) after any: the parameters of the step itself."""
  params = {"w": jnp.asarray([0.5, -1.0]), "b": jnp.zeros(())}
  for average in (jaxdrop.swa(), jaxdrop.ema(0.0)):
    tx = optax.chain(optax.sgd(0.1, momentum=0.9), average)
    state = TrainState.create(apply_fn=None, params=params, tx=tx)

    @jax.jit
    def step(state):
      grads = jax.grad(lambda p: jnp.sum((p["w"] - 3.0) ** 2) + p["b"] ** 2)(state.params)
      return state.apply_gradients(grads=grads)

    state = step(state)
    # TrainState.apply_gradients and the average both take optax.apply_updates(params, updates) in one
    # program (swa's first snapshot and ema's weight-1 lerp copy it): bitwise equal by construction.
    jax.tree.map(np.testing.assert_array_equal, jaxdrop.averaged_params(state.opt_state), state.params)
    assert not np.array_equal(np.asarray(state.params["w"]), np.asarray(params["w"]))


def test_averaged_params_finds_the_state_or_says_what_is_missing():
  params = {"w": jnp.ones(2)}
  both = optax.chain(optax.sgd(0.1), jaxdrop.ema(0.5), jaxdrop.swa()).init(params)
  assert jaxdrop.averaged_params(both, kind="ema") is both[1].ema
  assert jaxdrop.averaged_params(both, kind="swa") is both[2].mean
  with pytest.raises(ValueError, match="kind='ema' or kind='swa'"):
    jaxdrop.averaged_params(both)
  with pytest.raises(ValueError, match=r"no jaxdrop\.ema or jaxdrop\.swa state"):
    jaxdrop.averaged_params(optax.sgd(0.1).init(params))
  with pytest.raises(ValueError, match=r"tx.update\(updates, state, params\)"):
    jaxdrop.ema().update(params, jaxdrop.ema().init(params))


@pytest.mark.parametrize("call, match", [
    (lambda: jaxdrop.ema(1.5), "decay must be a finite number in"),
    (lambda: jaxdrop.ema(0.9, warmup_gamma=0), "warmup_gamma must be a finite number > 0"),
    (lambda: jaxdrop.swa(start=0), "start must be an integer >= 1"),
    (lambda: jaxdrop.swa(frequency=2.0), "frequency must be an integer >= 1"),
    (lambda: jaxdrop.swa_lr_schedule(0.1, 0.05, 3, anneal_strategy="exp"), "anneal_strategy must be 'cos'"),
    (lambda: jaxdrop.swa_lr_schedule(0.1, -1.0, 3), "swa_lr must be a finite number >= 0"),
    (lambda: jaxdrop.cyclic_swa_schedule(0.1, 0.01, 0), "cycle must be an integer >= 1"),
])
def test_bad_hyperparameters_are_refused_by_name(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def torch_swalr(lr, swa_lr, anneal_epochs, strategy, scheduler_steps):
  """torch/optim/swa_utils.py, SWALR.get_lr, line for line: the learning rate after each of the scheduler's
  steps (the first is LRScheduler.__init__'s own step, at construction), Python floats."""
  anneal = (lambda t: t) if strategy == "linear" else (lambda t: (1 - math.cos(math.pi * t)) / 2)
  lrs = []
  for step_count in range(1, scheduler_steps + 1):
    step = step_count - 1
    if anneal_epochs == 0:
      step = max(1, step)
    prev_t = max(0, min(1, (step - 1) / max(1, anneal_epochs)))
    prev_alpha = anneal(prev_t)
    prev_lr = swa_lr if prev_alpha == 1 else (lr - prev_alpha * swa_lr) / (1 - prev_alpha)
    t = max(0, min(1, step / max(1, anneal_epochs)))
    alpha = anneal(t)
    lr = swa_lr * alpha + prev_lr * (1 - alpha)
    lrs.append(lr)
  return lrs


@pytest.mark.parametrize("strategy, anneal, every", [("cos", 5, 1), ("linear", 3, 2), ("cos", 0, 1),
                                                     ("linear", 1, 3)])
def test_swa_lr_schedule_is_swalr(strategy, anneal, every):
  base = lambda count: 0.2 * jnp.cos(jnp.asarray(count, jnp.float32) / 40)  # a schedule of the count
  start, swa_lr = 7, 0.03
  schedule = jaxdrop.swa_lr_schedule(base, swa_lr, start, anneal, strategy, every=every)
  counts = np.arange(0, start + 10 * every)
  ours = np.asarray(jax.jit(jax.vmap(schedule))(counts))
  torch_lrs = torch_swalr(float(base(start)), swa_lr, anneal, strategy, 10)
  expected = [float(base(c)) if c < start else torch_lrs[(c - start) // every] for c in counts]
  np.testing.assert_allclose(ours, np.asarray(expected, np.float32), rtol=2e-6, atol=1e-8)
  np.testing.assert_array_equal(ours[:start], np.asarray(jax.vmap(base)(counts[:start])))  # base untouched
  assert ours[-1] == pytest.approx(swa_lr, rel=1e-6)  # then constant swa_lr
  if anneal == 0:
    assert ours[start] == pytest.approx(swa_lr, rel=1e-6)  # torch: swa_lr from construction on


def test_cyclic_swa_schedule_is_the_papers_equation_2():
  alpha1, alpha2, c = 0.05, 0.005, 4
  schedule = jaxdrop.cyclic_swa_schedule(alpha1, alpha2, c)
  ours = np.asarray(jax.jit(jax.vmap(schedule))(np.arange(13)))
  i = np.arange(1, 14)  # the paper's iterations count from 1
  t = (np.mod(i - 1, c) + 1) / c
  np.testing.assert_allclose(ours, (1 - t) * alpha1 + t * alpha2, rtol=1e-6)
  # The last step of each cycle, where swa(start=c, frequency=c) averages, runs at exactly alpha_2.
  np.testing.assert_array_equal(ours[c - 1::c], np.float32(alpha2))


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train, name="bn0")(x)
    h = nn.Dense(3, name="dense")(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.5, name="bn1")(h)


def torch_cumulative_bn(batch_stats):
  """torch/nn/modules/batchnorm.py, _BatchNorm.forward with momentum=None (what update_bn sets): factor
  1 / num_batches_tracked, running = (1 - factor) running + factor batch_stat, after reset_running_stats."""
  running = None
  for n, s in enumerate(batch_stats, start=1):
    running = s if running is None else (1 - 1 / n) * running + (1 / n) * s
  return running


@pytest.mark.parametrize("unbiased", [False, True])
def test_update_bn_averages_the_batch_statistics(unbiased):
  model = _Net()
  k0, k1 = jax.random.split(jax.random.key(3))
  variables = jax.jit(model.init, static_argnames="train")(k0, jnp.zeros((2, 4)), train=False)
  xs = [np.asarray(jax.random.normal(k, (n, 4)), np.float32) * 2 + 1
        for k, n in zip(jax.random.split(k1, 3), (5, 8, 5), strict=True)]
  # Sizes 5, 8, 5; an input, or a tuple or list whose first element is the input.
  batches = [xs[0], (xs[1], np.zeros(8)), [xs[2]]]
  new = jaxdrop.update_bn(model, variables, batches, unbiased=unbiased, train=True)

  def moments(a):
    a = a.astype(np.float64)
    return a.mean(0), a.var(0, ddof=1 if unbiased else 0)

  w, b = (np.asarray(variables["params"]["dense"][k], np.float64) for k in ("kernel", "bias"))
  stats0, stats1 = [], []
  for x in xs:
    mean, var = moments(x)
    stats0.append((mean, var))
    biased = x.astype(np.float64).var(0)  # bn0 normalizes with flax's (biased) batch variance
    stats1.append(moments((x - mean) / np.sqrt(biased + 1e-5) @ w + b))
  for name, stats in (("bn0", stats0), ("bn1", stats1)):
    got = new["batch_stats"][name]
    for i, key in enumerate(("mean", "var")):
      expected = torch_cumulative_bn([s[i] for s in stats])
      np.testing.assert_allclose(np.asarray(got[key]), expected, rtol=2e-5, atol=2e-6)
      assert got[key].dtype == variables["batch_stats"][name][key].dtype
  # The variances are the batches' mean variance, not the variance of the pooled data.
  pooled = np.concatenate(xs).astype(np.float64).var(0, ddof=1 if unbiased else 0)
  assert np.max(np.abs(np.asarray(new["batch_stats"]["bn0"]["var"]) - pooled)) > 1e-2
  # The parameters are those given, the input variables untouched.
  assert new["params"] is variables["params"]
  np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["bn0"]["mean"]), np.zeros(4))


def test_update_bn_refuses_what_it_cannot_do():
  model = _Net()
  variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), jnp.zeros((2, 4)), train=False)
  with pytest.raises(ValueError, match="batches is empty"):
    jaxdrop.update_bn(model, variables, [], train=True)
  with pytest.raises(ValueError, match=r"no BatchNorm computed batch statistics.*train=True"):
    jaxdrop.update_bn(model, variables, [jnp.ones((2, 4))], train=False)
