"""E11 (MC dropout on Boston Housing against the paper) on tiny settings: the splits and their standardization,
the weight decay and concrete regularizer of its tasks, the test log-likelihood's formula, the record, the
choice of the grid point, the report section, a bitwise replay and the options it refuses."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxdrop
from experiments import e11_uci_mc_dropout as e11
from experiments.data import boston_housing_table
from experiments.errors import ConfigError
from experiments.registry import run_experiment
from experiments.replay import replay

TINY = {"splits": 2, "epochs": 2, "multipliers": (1,), "rates": (0.05, 0.1), "taus": (0.1, 0.2),
        "mc_samples": 8, "hidden": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp("e11")
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int32 count with floats
    return out, run_experiment("e11", out, **TINY)


def test_the_splits_are_fixed_disjoint_and_90_10():
  splits = e11.train_test_splits(506, 20)
  again = e11.train_test_splits(506, 20)
  assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(splits, again, strict=True))
  for train, test in splits:
    assert (len(train), len(test)) == (455, 51)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(506))
  assert len({tuple(test.tolist()) for _, test in splits}) == 20  # 20 different test sets


def test_each_split_is_standardized_on_its_own_training_rows():
  features, target = boston_housing_table()
  rows = e11.train_test_splits(506, 3)
  ph = e11.phase(features, target, rows)
  for s, (train, test) in enumerate(rows):
    x = ph.data.x_train[ph.splits[0][s]]
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-5)
    y = ph.data.y_train[ph.splits[0][s], 0]
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5
    mean, std = features[train].mean(0), features[train].std(0)
    np.testing.assert_allclose(ph.data.x_test[ph.splits[1][s]], (features[test] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ph.targets[s], target[test])  # the metrics' targets keep their own scale
    assert ph.y_mean[s] == target[train].mean() and ph.y_std[s] == target[train].std()


def test_the_mc_task_adds_the_papers_weight_decay():
  params = e11.init_mlp(4)(jax.random.key(0))
  task = e11.mc_task_for(364, 1e-2)({"rate": jnp.float32(0.1), "tau": jnp.float32(0.15)})
  squares = float(jnp.sum(params["W1"] ** 2) + jnp.sum(params["W2"] ** 2))
  assert float(task.penalty(params)) == pytest.approx(1e-4 * 0.9 / (2 * 364 * 0.15) * squares, rel=1e-5)
  assert jnp.all(task.apply(params, jnp.ones((3, 13)), False, None) == e11.mc_apply(params, jnp.ones((3, 13)), None, 0.1))


def test_the_concrete_task_is_the_regularizer_at_precision_tau():
  params = e11.init_mlp(4, concrete=True)(jax.random.key(0))
  p1, p2 = e11.concrete_rates(params)
  assert float(p1) == pytest.approx(0.1) and float(p2) == pytest.approx(0.1)
  task = e11.concrete_task_for(364, 1e-2)({"tau": jnp.float32(0.2)})
  expected = sum(float(jaxdrop.concrete_dropout_regularizer(params[w], p, length_scale=1e-2, data_size=364,
                                                            precision=0.2)) for w, p in (("W1", p1), ("W2", p2)))
  assert float(task.penalty(params)) == pytest.approx(expected, rel=1e-5)
  grads = jax.grad(lambda p: jnp.sum(task.apply(p, jnp.ones((5, 13)), True, jax.random.key(1))))(params)
  assert float(grads["logit1"]) != 0 and float(grads["logit2"]) != 0  # the rates are learned


def test_the_test_log_likelihood_is_the_log_mean_exp_of_the_gaussian_density():
  samples, n = 64, 7
  passes = lambda params, x, key, rate: (x[:, :1] + jax.random.normal(key, (n, 1))) if key is not None else x[:, :1]  # noqa: E731
  x = jnp.linspace(-1, 1, n * 13).reshape(1, n, 13)
  y, y_mean, y_std, tau = np.linspace(0, 3, n)[None], np.array([2.0]), np.array([1.5]), np.array([0.3])
  keys = jax.random.key(3)[None]
  again = jax.random.wrap_key_data(jax.random.key_data(keys[0]))  # the same key, unconsumed (key reuse checks)
  got = e11.mc_predict(passes, samples)({"w": jnp.zeros((1,))}, x, jnp.float32(y), jnp.float32(y_mean),
                                         jnp.float32(y_std), jnp.float32(tau), jnp.zeros(1), keys)
  draws = np.stack([np.asarray(passes(None, x[0], k, 0.0)[:, 0]) for k in jax.random.split(again, samples)])
  draws = draws * 1.5 + 2.0
  ll = logsumexp(-0.5 * 0.3 * (y - draws) ** 2, axis=0) - math.log(samples) - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(0.3)
  assert float(got["ll"][0]) == pytest.approx(ll.mean(), rel=1e-5)
  assert float(got["rmse"][0]) == pytest.approx(np.sqrt(np.mean((y[0] - draws.mean(0)) ** 2)), rel=1e-5)
  deterministic = np.asarray(x[0, :, 0]) * 1.5 + 2.0
  assert float(got["rmse_deterministic"][0]) == pytest.approx(np.sqrt(np.mean((y[0] - deterministic) ** 2)), rel=1e-5)


def test_the_record_holds_every_model_and_epoch_count_with_standard_errors(tiny):
  out, record = tiny
  assert [(r["model"], r["epochs"]) for r in record["table"]] == [("MC dropout", 2), ("concrete dropout", 2)]
  for row in record["table"]:
    for metric in ("rmse", "ll"):
      values = np.asarray(row["per_split"][metric])
      assert len(values) == 2 and row[metric]["mean"] == pytest.approx(values.mean())
      assert row[metric]["se"] == pytest.approx(values.std(ddof=1) / math.sqrt(2))
    ll = np.asarray(row["validation_ll"])  # (points, splits): each split takes its best point
    points = [dict(zip(row["grid"], values)) for values in zip(*row["grid"].values())]
    assert row["per_split"]["chosen"] == [points[i] for i in ll.argmax(axis=0)]
  concrete = record["table"][1]
  assert 0 < concrete["learned_rates"]["inputs"]["mean"] < 1
  _, target = boston_housing_table()  # concrete's precisions are the paper's, on the standardized targets' scale
  np.testing.assert_allclose(concrete["grid"]["tau"], np.multiply(TINY["taus"], target.var()), rtol=1e-12)
  assert concrete["tau_scale"] == "standardized targets" and record["table"][0]["grid"]["tau"] == [0.1, 0.2, 0.1, 0.2]
  names = [run["name"] for run in record["runs"]]
  assert names[:2] == ["MC dropout, 2 epochs, validation: 4 points x 2 splits",
                       "MC dropout, 2 epochs, test: 4 points x 2 splits"]
  assert len(names) == 4 and all(run["runs"] == (8 if "MC" in run["name"] else 4) for run in record["runs"])
  assert (out / "published.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and record["figures"] == ["published.png"]


def test_the_section_prints_ours_beside_the_published_row(tiny):
  _, record = tiny
  record = {**record, "table": [{**record["table"][0], "multiplier": 1}]}
  text = "\n".join(e11.report_section(record, 2))
  assert "| MC dropout | 2 |" in text and "2.97 ± 0.19 | -2.46 ± 0.06" in text
  assert "T = 8 passes" in text and "mc samples 8 (full: 10000)" in text and "B feature" in text


def test_a_replay_of_e11_is_bitwise_identical(tiny, tmp_path):
  out, _ = tiny
  with jax.numpy_dtype_promotion("standard"):
    result = replay(out, tmp_path, quiet=True)
  assert result["identical"] and len(result["runs"]) == 4
  assert json.loads((tmp_path / "replay.json").read_text())["identical"]


@pytest.mark.parametrize(("options", "match"), [
    ({"multipliers": ()}, "--multipliers"), ({"multipliers": (0,)}, "--multipliers"), ({"splits": 1}, "2..100"),
    ({"rates": (0.0, 0.1)}, r"\(0, 1\)"), ({"rates": (0.1, 0.1)}, "distinct"), ({"taus": (0.0,)}, "> 0"),
    ({"length_scale": 0.0}, "> 0"), ({"seeds": 2}, "--seeds"), ({"checkpoint_every": 5}, "--checkpoint-every"),
    ({"dataset": "digits"}, "Boston Housing"), ({"resume": True}, "--resume"),
])
def test_options_it_cannot_honour_are_refused(options, match):
  with pytest.raises(ConfigError, match=match):
    e11.E11Config(**options).validate()
