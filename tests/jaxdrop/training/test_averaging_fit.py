"""The engine's weight averaging (FitOptions.average): what it trains, what it evaluates and reports."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdrop
from jaxdrop import training

X = jnp.linspace(-1, 1, 32)[:, None]
DATA = types.SimpleNamespace(x_train=X, y_train=3 * X, x_test=X, y_test=3 * X + 0.5)
TASK = training.Task(lambda p, x, train, key: x * p["w"] + p["b"], training.half_squared_error,
                     classification=False)
PARAMS = {"w": jnp.zeros(()), "b": jnp.zeros(())}
OPTIONS = training.FitOptions(epochs=3, batch_size=8, quiet=True, path="scan")


def test_the_engine_evaluates_the_average_and_says_which():
  result = training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0,
                        average=jaxdrop.swa(start=5, frequency=2))
  assert result.execution["evaluated"] == "swa"
  swa_state = result.state.opt_state[-1]
  assert int(swa_state.n_averaged) == 4  # updates 5, 7, 9, 11 of 12
  averaged = result.averaged_params
  assert averaged is swa_state.mean
  # The history's test loss is evaluate() of the averaged params: the same compiled evaluation on the same
  # values (fit calls the jitted evaluate_sums that evaluate calls), so equal by construction.
  assert result.history["test_loss"][-1] == training.evaluate(TASK, averaged, X, DATA.y_test)["loss"]
  trained = training.evaluate(TASK, result.state.params, X, DATA.y_test)["loss"]
  assert result.history["test_loss"][-1] != trained
  assert not np.allclose(np.asarray(averaged["w"]), np.asarray(result.state.params["w"]), rtol=1e-4)


def test_without_an_average_nothing_changes_in_the_report():
  result = training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0)
  assert "evaluated" not in result.execution and result.averaged_params is None
  assert training.FitOptions(epochs=1, batch_size=1).average is None
  # ema(0.0) copies the parameters after every step (a weight-1 lerp returns its end point exactly): the
  # average is the trained parameters (the same program's apply_updates: bitwise), and the training the same.
  copied = training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0, average=jaxdrop.ema(0.0))
  assert copied.execution["evaluated"] == "ema"
  jax.tree.map(np.testing.assert_array_equal, copied.averaged_params, copied.state.params)
  np.testing.assert_allclose(np.asarray(copied.state.params["w"]), np.asarray(result.state.params["w"]),
                             rtol=1e-6)
  np.testing.assert_allclose(copied.history["test_loss"], result.history["test_loss"], rtol=1e-5)


def test_fit_seeds_averages_each_run():
  init = lambda key: {"w": jax.random.normal(key, ()), "b": jnp.zeros(())}
  results = training.fit_seeds(TASK, init, optax.sgd(0.3), DATA, OPTIONS, seeds=[0, 1],
                               average=jaxdrop.ema(0.9, use_warmup=True))
  for result in results:
    assert result.execution["evaluated"] == "ema"
    assert result.averaged_params["w"].shape == ()
    loss = training.evaluate(TASK, result.averaged_params, X, DATA.y_test)["loss"]
    assert result.history["test_loss"][-1] == pytest.approx(loss, rel=1e-5)  # vmapped vs alone: rounding
  assert float(results[0].averaged_params["w"]) != float(results[1].averaged_params["w"])


def test_an_average_that_is_not_one_is_refused_by_name():
  with pytest.raises(ValueError, match=r"FitOptions.average must be jaxdrop.ema\(...\), jaxdrop.swa"):
    training.FitOptions(epochs=1, batch_size=8, average="ema")
  with pytest.raises(ValueError, match=r"average must be jaxdrop\.ema\(...\) or jaxdrop\.swa\(...\); its"):
    training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0, average=optax.scale(1.0))


def test_a_stopped_run_resumes_its_average(tmp_path):
  """The average is in the optimizer state, so it is checkpointed: a stopped and resumed run ends bitwise as
  the run that never stopped (both run the same compiled pieces on the same values, as the engine's other
  resume tests)."""
  average = jaxdrop.swa(start=2, frequency=3)
  whole = training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0, average=average,
                       checkpoints=training.Checkpoints(tmp_path / "whole", every_steps=2))
  asked = []
  with pytest.raises(training.TrainingStopped):
    training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0, average=average,
                 checkpoints=training.Checkpoints(tmp_path / "c", every_steps=2),
                 stop=lambda: asked.append(1) or len(asked) >= 3)
  resumed = training.fit(TASK, PARAMS, optax.sgd(0.3), DATA, OPTIONS, seed=0, average=average, resume=True,
                         checkpoints=training.Checkpoints(tmp_path / "c", every_steps=2))
  assert resumed.execution["resumed_from_step"] == 6
  jax.tree.map(np.testing.assert_array_equal, resumed.averaged_params, whole.averaged_params)
  assert int(resumed.state.opt_state[-1].n_averaged) == int(whole.state.opt_state[-1].n_averaged) == 4
  assert resumed.history == whole.history
