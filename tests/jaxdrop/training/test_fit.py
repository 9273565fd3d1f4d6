"""The training engine: batching, paths, seeds, divergence, evaluation."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from experiments.models import CNN, MLP
from experiments.runner import init_linen, linen_task
from jaxdrop import training
from jaxdrop.training import param_sha256
from tests._asserts import assert_close_ulp


def toy_data(n_train=100, n_test=40, features=6, seed=0):
  kx, kt = jax.random.split(jax.random.key(seed))
  w = jnp.arange(features * 3, dtype=jnp.float32).reshape(features, 3) % 5 - 2
  x_train = jax.random.normal(kx, (n_train, features))
  x_test = jax.random.normal(kt, (n_test, features))
  label = lambda x: jnp.argmax(x @ w, axis=1).astype(jnp.int32)
  return types.SimpleNamespace(x_train=x_train, y_train=label(x_train), x_test=x_test, y_test=label(x_test))


def init_params(model, seed, sample):
  return init_linen(model, sample)(training.run_keys(seed)["init"])


MODEL = MLP((32,), (0.5,), num_classes=3)
TASK = linen_task(MODEL)


def assert_same_training(actual, expected, data):
  """Two programs' runs of the same training (scan vs loop, vmapped vs alone): the same parameters and
  history up to float32 rounding.

  A rounding difference in one step is carried through and amplified by the later steps: parameters and
  losses within 64 ulp of their scale (about 4e-6 relative); accuracies within one example (a near-tied
  argmax can flip); the epochs exactly.
  """
  assert_close_ulp(actual.state.params, expected.state.params, ulp=64, scale="max")
  a, e = actual.history, expected.history
  assert a.keys() == e.keys() and a["epoch"] == e["epoch"]
  for name in ("train_loss", "test_loss"):
    assert_close_ulp(np.asarray(a[name], np.float32), np.asarray(e[name], np.float32), ulp=64, scale="max")
  for name, n in (("train_acc", len(data.x_train)), ("test_acc", len(data.x_test))):
    assert a[name] == pytest.approx(e[name], abs=1.001 / n)


def test_batch_plan_covers_every_row_once_and_pads_with_weight_zero():
  indices, weights = training.batch_plan(jax.random.key(0), 10, 4)
  assert indices.shape == weights.shape == (3, 4)
  real = np.asarray(indices)[np.asarray(weights) == 1]
  np.testing.assert_array_equal(np.sort(real), np.arange(10))
  np.testing.assert_array_equal(np.asarray(weights).sum(axis=1), [4, 4, 2])
  ordered, _ = training.batch_plan(None, 10, 4)
  np.testing.assert_array_equal(np.asarray(ordered).ravel()[:10], np.arange(10))


def test_short_last_batch_loss_is_the_mean_over_its_real_rows():
  data = toy_data(n_train=10)
  model = MLP((32,), (0.0,), num_classes=3)  # no dropout: masks depend on the batch's shape
  task = linen_task(model)
  params = init_params(model, 0, data.x_train)
  step = jax.jit(training.make_train_step(task))
  state = training.TrainState.create(apply_fn=task.apply, params=params, tx=jaxdrop.sgd(0.1))
  indices = jnp.array([3, 7, 0, 0], jnp.int32)
  weights = jnp.array([1, 1, 0, 0], jnp.float32)
  key = jax.random.key(1)
  _, padded = step(state, data.x_train, data.y_train, indices, weights, key)
  _, exact = step(state, data.x_train, data.y_train, indices[:2], weights[:2], key)
  np.testing.assert_allclose(padded["loss"], exact["loss"], rtol=1e-6)
  assert float(padded["count"]) == 2.0


def test_scan_and_loop_paths_give_the_same_parameters():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  kwargs = dict(epochs=3, batch_size=16, seed=3, quiet=True)
  scan = training.fit(TASK, params, jaxdrop.sgd(0.1, momentum=0.9), data, path="scan", **kwargs)
  loop = training.fit(TASK, params, jaxdrop.sgd(0.1, momentum=0.9), data, path="loop", **kwargs)
  # A lax.scan body against a standalone jitted step: two programs, equal to float32 rounding (bitwise only
  # where XLA happens to compile the step alike).
  assert_same_training(scan, loop, data)
  assert scan.execution["path"] == "scan" and loop.execution["path"] == "loop"
  # fit leaves its input alone (no donation): bitwise a fresh run of the same init.
  np.testing.assert_array_equal(params["Dense_0"]["kernel"], init_params(MODEL, 0, data.x_train)["Dense_0"]["kernel"])


def test_vmapped_seeds_equal_each_seed_run_alone():
  data = toy_data()
  init = lambda key: MODEL.init(key, data.x_train[:1], train=False)["params"]
  kwargs = dict(epochs=2, batch_size=16, quiet=True)
  together = training.fit_seeds(TASK, init, jaxdrop.sgd(0.1, momentum=0.9), data, seeds=[4, 5, 6], **kwargs)
  for seed, result in zip([4, 5, 6], together):
    alone = training.fit(TASK, init_params(MODEL, seed, data.x_train), jaxdrop.sgd(0.1, momentum=0.9), data,
                       seed=seed, **kwargs)
    assert_same_training(result, alone, data)  # batched kernels against single ones: float32 rounding
  assert together[0].execution["runs_vmapped"] == 3
  assert param_sha256(together[0].state.params) != param_sha256(together[1].state.params)


def test_same_seed_same_hash_different_seed_different_hash():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  run = lambda seed: training.fit(TASK, params, jaxdrop.sgd(0.1), data, epochs=1, batch_size=16, seed=seed, quiet=True)
  assert param_sha256(run(0).state.params) == param_sha256(run(0).state.params)
  assert param_sha256(run(0).state.params) != param_sha256(run(1).state.params)


def noise(key):
  return jax.random.normal(key, (1, 3))


def noise_task():
  """A "model" whose training output is noise drawn from its key, its zero weights and 32 examples."""
  task = training.Task(lambda p, x, train, key: x @ p["w"] + (noise(key) if train else 0.0), training.cross_entropy)
  return task, {"w": jnp.zeros((6, 3))}, toy_data(n_train=32)


def test_step_key_is_folded_from_the_step_number():
  # With lr 0 each step's loss is a function of fold_in(dropout_key, step) alone.
  task, params, data = noise_task()
  result = training.fit(task, params, jaxdrop.sgd(0.0), data, epochs=2, batch_size=32, seed=5, quiet=True,
                      shuffle=False)
  dropout_key = training.run_keys(5)["dropout"]
  for step in range(2):
    logits = data.x_train @ params["w"] + noise(jax.random.fold_in(dropout_key, step))
    expected = float(jnp.mean(training.cross_entropy(logits, data.y_train)))
    assert float(result.step_losses[step][0]) == pytest.approx(expected, rel=1e-6)


def test_divergence_stops_with_the_step_number():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  with pytest.raises(training.TrainingDivergedError, match=r"at step \d+"):
    training.fit(TASK, params, jaxdrop.sgd(1e30), data, epochs=3, batch_size=16, seed=0, quiet=True)


def test_evaluate_is_deterministic_and_exact():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  first = training.evaluate(TASK, params, data.x_test, data.y_test, batch_size=7)
  assert first == training.evaluate(TASK, params, data.x_test, data.y_test, batch_size=7)  # the same program
  other = training.evaluate(TASK, params, data.x_test, data.y_test, batch_size=40)
  logits = MODEL.apply({"params": params}, data.x_test, train=False)
  top_two = np.sort(np.asarray(logits), axis=1)[:, -2:]
  assert np.min(top_two[:, 1] - top_two[:, 0]) > 1e-4  # no near-tie: rounding cannot move an argmax
  assert first["accuracy"] == other["accuracy"]  # so the same argmaxes for batches of 7 and 40, exactly
  # Batches of 7 and 40 sum the (positive) losses in another order: a few ulp.
  assert_close_ulp(first["loss"], other["loss"], ulp=8, dtype=np.float32)
  assert first["accuracy"] == pytest.approx(float(jnp.mean(jnp.argmax(logits, 1) == data.y_test)))
  assert first["loss"] == pytest.approx(float(jnp.mean(training.cross_entropy(logits, data.y_test))), rel=1e-5)


def test_auto_path_avoids_scan_for_convolutions_on_cpu():
  x = np.zeros((2, 8, 8, 1), np.float32)
  cnn = CNN(padding="SAME")
  assert training.xla_cpu.choose_path(linen_task(cnn), init_params(cnn, 0, x), x)[0] == ("loop" if jax.default_backend() == "cpu" else "scan")
  assert training.xla_cpu.choose_path(TASK, init_params(MODEL, 0, toy_data().x_train), toy_data().x_train)[0] == "scan"


def test_eval_train_and_eval_every():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  result = training.fit(TASK, params, jaxdrop.sgd(0.1), data, epochs=5, batch_size=16, seed=0, quiet=True,
                      eval_every=2, eval_train=True)
  assert result.history["epoch"] == [2, 4, 5]
  final = training.evaluate(TASK, result.state.params, data.x_train, data.y_train)
  assert result.history["train_acc"][-1] == final["accuracy"]  # the same jitted evaluation and batch size
  assert len(result.step_losses) == 5 and result.step_losses[0].shape == (7,)


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("batch_size", -2), ("eval_every", 1.5),
                                              ("epochs", True), ("path", "fast"), ("compiler_options", "fast"),
                                              ("compiler_options", {1: "x"}), ("mask_generator", "philox7")])
def test_fit_options_name_the_bad_field(field, value):
  with pytest.raises(ValueError, match=f"FitOptions.{field} must be"):
    training.FitOptions(**{"epochs": 1, "batch_size": 8, field: value})


def test_fit_options_object_and_keywords_train_the_same_run():
  data = toy_data()
  params = init_params(MODEL, 0, data.x_train)
  options = training.FitOptions(epochs=3, batch_size=16, quiet=True, path="loop")
  from_object = training.fit(TASK, params, jaxdrop.sgd(0.1), data, options, seed=0)
  from_keywords = training.fit(TASK, params, jaxdrop.sgd(0.1), data, epochs=3, batch_size=16, quiet=True, path="loop",
                               seed=0)
  overridden = training.fit(TASK, params, jaxdrop.sgd(0.1), data, options, seed=0, epochs=2)
  # The same options give the same compiled programs: bitwise, by construction.
  assert param_sha256(from_object.state.params) == param_sha256(from_keywords.state.params)
  assert from_object.history == from_keywords.history and from_object.execution["path"] == "loop"
  assert overridden.history["epoch"] == [1, 2] and options.epochs == 3  # keywords override, the object is kept


def test_mask_generator_philox7_draws_each_steps_masks_from_a_philox7_dropout_key():
  # The steps' keys are fold_in(dropout_key, step) of a PHILOX7 key with the default key's words; with lr 0
  # each step's loss is a function of that key alone.
  task = training.Task(lambda p, x, train, key: x @ p["w"] + (jaxdrop.dropout(key, jnp.ones((1, 3)), 0.5)
                                                              if train else 0.0), training.cross_entropy)
  params, data = {"w": jnp.zeros((6, 3))}, toy_data(n_train=32)
  run = lambda generator: training.fit(task, params, jaxdrop.sgd(0.0), data, epochs=2, batch_size=32, seed=5,
                                       quiet=True, shuffle=False, mask_generator=generator)
  seven, default = run("philox4x32-7"), run("philox4x32-10")
  keys = training.run_keys(5, "philox4x32-7")
  assert jaxdrop.mask_generator(keys["dropout"]) == jaxdrop.MASK_GENERATOR_7
  np.testing.assert_array_equal(jax.random.key_data(keys["dropout"]),
                                jax.random.key_data(training.run_keys(5)["dropout"]))
  for step in range(2):
    drop = jaxdrop.dropout(jax.random.fold_in(training.run_keys(5, "philox4x32-7")["dropout"], step),
                           jnp.ones((1, 3)), 0.5)
    expected = float(jnp.mean(training.cross_entropy(data.x_train @ params["w"] + drop, data.y_train)))
    assert float(seven.step_losses[step][0]) == pytest.approx(expected, rel=1e-6)
  assert seven.execution["mask_generator"] == jaxdrop.MASK_GENERATOR_7
  assert "mask_generator" not in default.execution  # the default's records keep their keys
  with pytest.raises(ValueError, match="run_keys: mask_generator must be"):
    training.run_keys(0, "philox7")


def test_vmapped_seeds_with_philox7_masks_equal_each_seed_run_alone():
  data = toy_data()
  init = lambda key: MODEL.init(key, data.x_train[:1], train=False)["params"]
  kwargs = dict(epochs=2, batch_size=16, quiet=True, mask_generator="philox4x32-7")
  together = training.fit_seeds(TASK, init, jaxdrop.sgd(0.1), data, seeds=[4, 5], **kwargs)
  for seed, result in zip([4, 5], together):
    alone = training.fit(TASK, init_params(MODEL, seed, data.x_train), jaxdrop.sgd(0.1), data, seed=seed,
                         **kwargs)
    assert_same_training(result, alone, data)
  default = training.fit(TASK, init_params(MODEL, 4, data.x_train), jaxdrop.sgd(0.1), data, seed=4, epochs=2,
                         batch_size=16, quiet=True)
  assert param_sha256(default.state.params) != param_sha256(together[0].state.params)


def test_fit_seeds_refuses_a_mesh():
  data = toy_data()
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  with pytest.raises(ValueError, match="fit_seeds trains the seeds on one device"):
    training.fit_seeds(TASK, init_linen(MODEL, data.x_train), jaxdrop.sgd(0.1), data, seeds=[0, 1], epochs=1,
                       batch_size=16, mesh=mesh)
