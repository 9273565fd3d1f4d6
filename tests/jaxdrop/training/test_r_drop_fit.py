"""The training engine with R-Drop (Task.r_drop_alpha): one pass over the batch concatenated with itself,
the objective of jaxdrop.r_drop_loss, per-example keys, sweeps, and nothing changed when it is off."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

import jaxdrop
from jaxdrop import training
from tests._asserts import assert_close_ulp

FEATURES, HIDDEN, CLASSES = 5, 16, 3


def _data(n_train=24, n_test=8):
  kx, kt = jax.random.split(jax.random.key(7))
  w = jnp.arange(FEATURES * CLASSES, dtype=jnp.float32).reshape(FEATURES, CLASSES) % 4 - 1.5
  x_train, x_test = jax.random.normal(kx, (n_train, FEATURES)), jax.random.normal(kt, (n_test, FEATURES))
  label = lambda x: jnp.argmax(x @ w, axis=1).astype(jnp.int32)
  return types.SimpleNamespace(x_train=x_train, y_train=label(x_train), x_test=x_test, y_test=label(x_test))


def _init(key):
  k1, k2 = jax.random.split(key)
  return {"w1": 0.5 * jax.random.normal(k1, (FEATURES, HIDDEN)), "w2": 0.5 * jax.random.normal(k2, (HIDDEN, CLASSES))}


def _apply(rate, seen=None):
  def apply(params, x, train, key):
    if seen is not None:
      seen.append(x.shape)
    h = jax.nn.relu(x @ params["w1"])
    if train and rate:
      h = jaxdrop.dropout(key, h, rate)
    return h @ params["w2"]
  return apply


def _task(alpha, rate=0.5, seen=None):
  return training.Task(_apply(rate, seen), training.cross_entropy, r_drop_alpha=alpha)


def _batch(data):
  indices = jnp.array([3, 9, 0, 0], jnp.int32)
  weights = jnp.array([1.0, 1.0, 1.0, 0.0])  # the last row pads (weight 0), as a short last batch's do
  return data.x_train[indices], data.y_train[indices], indices, weights


def _expected_step(task, params, inputs, targets, weights, apply, lr):
  """The reference's step by hand: one pass over concatenate([x, x]), the mean R-Drop loss, an SGD update."""
  def objective(p):
    outputs = apply(p, inputs)
    rows = training.cross_entropy(outputs, jnp.concatenate([targets, targets]))
    per_example = jaxdrop.r_drop_loss(outputs, rows, alpha=task.r_drop_alpha)
    return jnp.sum(per_example * weights) / jnp.sum(weights), (outputs, rows)

  grads, (outputs, rows) = jax.jit(jax.grad(objective, has_aux=True))(params)
  return jax.tree.map(lambda p, g: p - lr * g, params, grads), outputs, rows


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_a_step_minimizes_the_r_drop_loss_of_one_pass_over_the_doubled_batch(batch_invariant):
  data, params, lr = _data(), _init(jax.random.key(1)), 0.3
  task = _task(2.0)
  xb, yb, indices, weights = _batch(data)
  dropout_key = jax.random.key(5)
  state = TrainState.create(apply_fn=None, params=params, tx=optax.sgd(lr))
  step = jax.jit(training.make_train_step(task, batch_invariant=batch_invariant))
  new_state, metrics = step(state, data.x_train, data.y_train, indices, weights, dropout_key)

  doubled = jnp.concatenate([xb, xb])
  if batch_invariant:  # copy 2 of example i takes the key of data-set index n + i (epoch 0)
    n = data.x_train.shape[0]
    keys = jnp.concatenate([training.example_keys(dropout_key, jnp.int32(0), indices),
                            training.example_keys(dropout_key, jnp.int32(0), indices + n)])
    apply = lambda p, x: training.apply_per_example(task, p, x, keys)
  else:  # one key for the doubled batch: the mask covers both copies
    key = jax.random.fold_in(dropout_key, 0)
    apply = lambda p, x: task.apply(p, x, True, key)
  expected, outputs, rows = _expected_step(task, params, doubled, yb, weights, apply, lr)

  assert_close_ulp(new_state.params, expected, ulp=16, scale="max")
  # The two copies drew different masks (the divergence is not zero), so alpha moved the update.
  kl = jaxdrop.symmetric_kl(outputs[:4], outputs[4:])
  assert float(jnp.sum(kl * weights)) > 1e-3
  # Reported: the task's loss and accuracy over both copies of the real examples, without the divergence.
  task_mean = float(jnp.sum((rows[:4] + rows[4:]) / 2 * weights) / 3)
  assert float(metrics["loss"]) == pytest.approx(task_mean, rel=1e-5)
  assert float(metrics["count"]) == 3.0
  correct = (jnp.argmax(outputs, -1) == jnp.concatenate([yb, yb])).astype(jnp.float32)
  assert float(metrics["correct"]) == pytest.approx(float(jnp.sum((correct[:4] + correct[4:]) / 2 * weights)))


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_off_the_model_sees_the_batch_once_and_on_twice(batch_invariant, monkeypatch):
  data = _data()
  _, _, indices, weights = _batch(data)
  seen = []
  per_example = training.apply_per_example
  monkeypatch.setattr("jaxdrop.training._steps.apply_per_example",  # records the rows and keys it is given
                      lambda task, params, xb, keys: seen.append((xb.shape, keys.shape)) or per_example(
                          task, params, xb, keys))
  for alpha, rows in ((0.0, 4), (0, 4), (0.5, 8)):
    seen.clear()
    task = _task(alpha, seen=None if batch_invariant else seen)
    state = TrainState.create(apply_fn=None, params=_init(jax.random.key(0)), tx=optax.sgd(0.1))
    step = training.make_train_step(task, batch_invariant=batch_invariant)
    jax.eval_shape(step, state, data.x_train, data.y_train, indices, weights, jax.random.key(0))
    assert seen == ([((rows, FEATURES), (rows,))] if batch_invariant else [(rows, FEATURES)]), (alpha, seen)


def test_without_dropout_r_drop_trains_as_plain_training():
  # Both copies are the same function of the same input: the divergence and its gradient are exactly zero
  # and the task loss's mean over two equal copies is the plain loss, so the runs differ only by the
  # rounding of the doubled batch's sums.
  data = _data()
  plain = training.fit(_task(0.0, rate=0.0), _init(jax.random.key(2)), optax.sgd(0.5), data, epochs=2,
                       batch_size=8, seed=0, quiet=True, path="scan")
  r_drop = training.fit(_task(4.0, rate=0.0), _init(jax.random.key(2)), optax.sgd(0.5), data, epochs=2,
                        batch_size=8, seed=0, quiet=True, path="scan")
  assert_close_ulp(r_drop.state.params, plain.state.params, ulp=64, scale="max")
  assert_close_ulp(np.float32(r_drop.history["train_loss"]), np.float32(plain.history["train_loss"]), ulp=64,
                   scale="max")


def test_a_sweep_point_with_a_traced_alpha_is_the_fit_run():
  data = _data()
  results = training.fit_sweep(lambda h: _task(h["alpha"]), _init, lambda h: optax.sgd(0.5), data, epochs=2,
                               batch_size=8, hparams=training.grid(alpha=[1.5]), seeds=[3])
  run = training.fit(_task(1.5), _init(training.run_keys(3)["init"]), optax.sgd(0.5), data, epochs=2,
                     batch_size=8, seed=3, quiet=True, path="scan")
  assert_close_ulp(results[0].params, run.state.params, ulp=64, scale="max")
  for name in ("train_loss", "test_loss"):
    assert_close_ulp(np.float32(results[0].history[name]), np.float32(run.history[name]), ulp=64, scale="max")


def test_task_checks_r_drop_alpha_and_stays_hashable():
  task = _task(jnp.float32(2.0))
  assert task.r_drop_alpha == 2.0 and isinstance(task.r_drop_alpha, float)
  hash(task)  # evaluation's compiled program takes the task as a static argument
  assert dataclasses.replace(task, r_drop_alpha=0).r_drop_alpha == 0.0
  with pytest.raises(ValueError, match=r"Task.r_drop_alpha must be a finite number >= 0"):
    _task(-1.0)
  with pytest.raises(ValueError, match=r"Task.r_drop_alpha must be a finite number >= 0"):
    _task(float("inf"))
  with pytest.raises(TypeError, match=r"Task.r_drop_alpha must be a real number"):
    _task(True)
