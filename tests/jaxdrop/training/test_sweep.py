"""fit_sweep: a grid point's run is the run ``fit`` trains alone (to float rounding); grids, chunks, errors."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdrop
from jaxdrop import training
from tests._asserts import assert_close_ulp
from tests.jaxdrop.training.test_fit import toy_data

EPOCHS, BATCH = 3, 16


def task_for(h):
  """A one-hidden-layer classifier whose dropout rate is the point's (traced) ``rate``."""

  def apply(p, x, train, key):
    hidden = jax.nn.relu(x @ p["w1"] + p["b1"][None])
    if train:
      hidden = jaxdrop.dropout(key, hidden, h["rate"])
    return hidden @ p["w2"] + p["b2"][None]

  return training.Task(apply, training.cross_entropy)


def tx_for(h):
  return jaxdrop.sgd(h["lr"], momentum=0.9, weight_decay=h["decay"])


def init(key):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (6, 16)) * 0.5, "b1": jnp.zeros(16),
          "w2": jax.random.normal(k2, (16, 3)) * 0.5, "b2": jnp.zeros(3)}


@pytest.fixture(scope="module")
def sweep():
  """2 x 2 points x 2 seeds x 2 splits = 16 runs, 5 at a time (the last chunk padded)."""
  data = toy_data(n_train=100, n_test=40)
  order = np.random.default_rng(0).permutation(100)
  splits = (np.stack([order[:80], order[20:]]), np.stack([np.arange(0, 30), np.arange(10, 40)]))
  points = training.grid(rate=[0.0, 0.5], decay=[0.0, 1e-2])
  points["lr"] = np.full(4, 0.1)
  results = training.fit_sweep(task_for, init, tx_for, data, epochs=EPOCHS, batch_size=BATCH, hparams=points,
                               seeds=[0, 1], splits=splits, chunk_size=5)
  return data, splits, results


@pytest.mark.parametrize("run", [0, 6, 11, 15])  # first; mid-chunk; a chunk's last; the padded chunk's one run
def test_a_grid_point_is_the_run_fit_trains_alone(sweep, run):
  data, (train, test), results = sweep
  result = results[run]
  config = result.config
  point = {k: jnp.float32(config[k]) for k in ("rate", "decay", "lr")}  # as the sweep trained them: float32
  alone = types.SimpleNamespace(x_train=data.x_train[train[config["split"]]],
                                y_train=data.y_train[train[config["split"]]],
                                x_test=data.x_test[test[config["split"]]], y_test=data.y_test[test[config["split"]]])
  expected = training.fit(task_for(point), init(training.run_keys(config["seed"])["init"]), tx_for(point), alone,
                          epochs=EPOCHS, batch_size=BATCH, seed=config["seed"], quiet=True, path="scan")
  # Another program (vmapped over runs, the rate traced): equal to float32 rounding, carried through 15 steps.
  assert_close_ulp(result.params, expected.state.params, ulp=64, scale="max")
  assert result.history["epoch"] == expected.history["epoch"] == [1, 2, 3]
  for name in ("train_loss", "test_loss"):
    assert_close_ulp(np.float32(result.history[name]), np.float32(expected.history[name]), ulp=64, scale="max")
  for name, n in (("train_acc", 80), ("test_acc", 30)):
    assert result.history[name] == pytest.approx(expected.history[name], abs=1.001 / n)
  assert result.diverged_at is None


def test_runs_come_points_first_then_seeds_then_splits(sweep):
  _, _, results = sweep
  configs = [(r.config["rate"], r.config["decay"], r.config["seed"], r.config["split"]) for r in results]
  assert configs == [(rate, decay, seed, split) for rate in (0.0, 0.5) for decay in (0.0, 1e-2)
                     for seed in (0, 1) for split in (0, 1)]
  assert len({str(jax.tree.leaves(r.params)[0].tolist()) for r in results}) == 16  # 16 different runs


def test_chunks_change_nothing_but_rounding(sweep):
  data, splits, results = sweep
  points = {"rate": [0.5], "decay": [1e-2], "lr": [0.1]}
  whole = training.fit_sweep(task_for, init, tx_for, data, epochs=EPOCHS, batch_size=BATCH, hparams=points,
                             seeds=[0, 1], splits=splits)
  for got, want in zip(whole, results[12:], strict=True):
    assert got.config == want.config
    assert_close_ulp(got.params, want.params, ulp=64, scale="max")


def test_a_diverging_point_is_reported_and_the_others_train():
  data = toy_data()
  points = {"rate": [0.0, 0.0], "decay": [0.0, 0.0], "lr": [0.1, 1e30]}
  good, bad = training.fit_sweep(task_for, init, tx_for, data, epochs=2, batch_size=BATCH, hparams=points,
                                 seeds=[0])
  assert good.diverged_at is None and np.isfinite(good.history["test_loss"]).all()
  assert bad.diverged_at is not None and 1 <= bad.diverged_at <= 14


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"hparams": {}}, "hparams must be a non-empty mapping"),
    ({"hparams": {"rate": [0.1, 0.2], "decay": [0.0], "lr": [0.1, 0.1]}}, "the same, non-zero number of values"),
    ({"seeds": []}, "seeds is empty"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
    ({"splits": (np.zeros((2, 5), int), np.zeros((3, 5), int))}, "2 training and 3 test index sets"),
    ({"splits": (np.full((1, 5), 100), np.zeros((1, 5), int))}, r"must lie in 0\.\.99"),
    ({"splits": (np.zeros((1, 5)), np.zeros((1, 5), int))}, "2-D integer array"),
    ({"batch_invariant": True}, "batch_invariant=True is not supported"),
    ({"average": jaxdrop.ema(0.9)}, "does not take FitOptions.average"),
])
def test_bad_arguments_name_themselves(kwargs, match):
  args = {"hparams": {"rate": [0.1], "decay": [0.0], "lr": [0.1]}, "seeds": [0], **kwargs}
  with pytest.raises(ValueError, match=match):
    training.fit_sweep(task_for, init, tx_for, toy_data(), epochs=1, batch_size=BATCH, **args)


def test_grid_is_the_cartesian_product_last_axis_fastest():
  g = training.grid(a=[1, 2], b=[10, 20, 30])
  assert g["a"].tolist() == [1, 1, 1, 2, 2, 2] and g["b"].tolist() == [10, 20, 30] * 2
  with pytest.raises(ValueError, match="at least one axis"):
    training.grid()


def test_a_philox7_sweep_run_is_the_philox7_run_fit_trains_alone():
  data = toy_data(n_train=64, n_test=16)
  point = {"rate": jnp.float32(0.5), "decay": jnp.float32(0.0), "lr": jnp.float32(0.1)}
  kwargs = dict(epochs=2, batch_size=BATCH, mask_generator="philox4x32-7")
  swept = training.fit_sweep(task_for, init, tx_for, data, hparams={k: np.array([v]) for k, v in point.items()},
                             seeds=[3], **kwargs)[0]
  alone = training.fit(task_for(point), init(training.run_keys(3)["init"]), tx_for(point), data, seed=3,
                       quiet=True, path="scan", **kwargs)
  assert_close_ulp(swept.params, alone.state.params, ulp=64, scale="max")
  default = training.fit(task_for(point), init(training.run_keys(3)["init"]), tx_for(point), data, seed=3,
                         quiet=True, path="scan", epochs=2, batch_size=BATCH)
  assert float(jnp.max(jnp.abs(default.state.params["w2"] - alone.state.params["w2"]))) > 1e-3  # other masks
