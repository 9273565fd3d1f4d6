"""The experiments end to end (short runs), their records and acceptance figures."""

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import e8_vit, registry
from experiments.errors import ConfigError
from experiments.registry import EXPERIMENTS, run_experiment

RECORD_KEYS = {"experiment", "config", "seed", "environment", "dataset", "runs", "figures", "wall_time_s", "status"}


def check_record(out, name):
  record = json.loads((out / "record.json").read_text())
  assert RECORD_KEYS <= set(record) and record["experiment"] == name and record["status"] == "ok"
  for figure in record["figures"]:
    assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  for run in record["runs"]:
    hashes = run["param_sha256"] if "seeds" in run else [run["param_sha256"]]  # one per seed
    assert all(len(h) == 64 for h in hashes) and run["execution"]["path"] in ("scan", "loop")
  return record


@pytest.mark.parametrize(("name", "dataset", "options"), [
    ("e1", "mnist", {"batch_size": 4}),
    ("e2", "fashion_mnist", {"batch_size": 4}),
    ("e4", "cifar10", {"batch_size": 4}),
])
def test_tfds_experiments_run_one_short_epoch_on_mock_data(tmp_path, name, dataset, options):
  lines = []
  with tfds.testing.mock_data(num_examples=8):
    run_experiment(name, tmp_path, emit=lines.append, dataset=dataset, data_dir=str(tmp_path / "tfds"), epochs=1,
                   **options)
  record = check_record(tmp_path, name)
  assert record["dataset"]["name"] == dataset and record["dataset"]["train_size"] == 8
  assert all(len(r["history"]["epoch"]) == 1 for r in record["runs"])
  assert lines


def test_e1_prints_the_running_loss_every_n_steps(tmp_path):
  lines = []
  run_experiment("e1", tmp_path, emit=lines.append, dataset="digits", epochs=1, log_every=10)
  running = [line for line in lines if line.startswith("[1,")]
  assert len(running) == 1347 // 32 // 10 and running[0].startswith("[1,    10] loss: ")
  assert "Finished Training" in lines


def test_e3_reproduces_the_seed_figures(tmp_path):
  record = run_experiment("e3", tmp_path)
  assert all(record["checks"].values()), record["checks"]
  norms = {(r["version"], r["weight_decay"]): [] for r in record["runs"]}
  for r in record["runs"]:
    norms[(r["version"], r["weight_decay"])].append(r["w_norm"])
  for version in ("scratch", "concise"):
    assert 11 <= np.mean(norms[(version, 0.0)]) <= 15 and 0.2 <= np.mean(norms[(version, 3.0)]) <= 0.5
  check_record(tmp_path, "e3")


def test_e2_concise_reaches_95_percent_on_the_digits(tmp_path):
  record = run_experiment("e2", tmp_path, versions=("concise",), dataset="digits")
  (run,) = record["runs"]
  assert run["final"]["test_acc"] >= 0.95 and all(run["checks"].values())
  assert "digits" in record["dataset"]["note"]


def test_e2_r_drop_trains_each_version_again_and_compares_test_accuracy_over_seeds(tmp_path, monkeypatch):
  # The training is the engine's (tests/jaxdrop/training/test_r_drop_fit.py); here, what E2 asks of it and
  # reports, with each run's per-seed test accuracies made up (no training: seconds).
  from experiments import e2_d2l_mlp

  asked = []

  def fake_train_run(name, task, init, tx, data, config, record, **kwargs):
    asked.append((name, task.r_drop_alpha))
    accs = [0.9, 0.8] if task.r_drop_alpha == 0 else [0.95, 0.8]
    history = {"epoch": [1], "train_loss": [0.1], "test_loss": [0.2], "train_acc": [0.99], "test_acc": [0.85]}
    per_seed = [{"name": name, "seed": s, "history": history, "final": {"train_loss": 0.1, "train_acc": 0.99,
                                                                         "test_loss": 0.2, "test_acc": a}}
                for s, a in enumerate(accs)]
    return {"name": name, "history": history, "final": per_seed[0]["final"], "per_seed": per_seed}, []

  monkeypatch.setattr(e2_d2l_mlp, "train_run", fake_train_run)
  record = run_experiment("e2", tmp_path, dataset="digits", epochs=1, seeds=2, r_drop_alpha=1.0)
  assert asked == [("scratch", 0.0), ("scratch, R-Drop α=1", 1.0), ("concise", 0.0), ("concise, R-Drop α=1", 1.0)]
  assert [r["name"] for r in record["runs"]] == [name for name, _ in asked]
  for version in ("scratch", "concise"):
    comparison = record["r_drop"][version]
    assert comparison["without"]["mean"] == pytest.approx(0.85) and comparison["with"]["mean"] == pytest.approx(0.875)
    assert comparison["difference"]["mean"] == pytest.approx(0.025)  # paired: seed 0 gained 0.05, seed 1 none
    assert comparison["difference"]["sd"] == pytest.approx(np.std([0.05, 0.0], ddof=1))
    for s in (comparison["without"], comparison["with"], comparison["difference"]):
      assert s["n"] == 2 and s["ci95"][0] <= s["mean"] <= s["ci95"][1]
  asked.clear()
  assert "r_drop" not in run_experiment("e2", tmp_path, dataset="digits", epochs=1, seeds=2)  # off by default
  assert asked == [("scratch", 0.0), ("concise", 0.0)]


def test_e2s_report_shows_r_drops_row_and_intervals_only_when_it_ran():
  from experiments.e2_d2l_mlp import E2Config, report_section

  assert E2Config().r_drop_alpha == 0.0  # the default run and reproduce train as before
  summary = lambda m: {"mean": m, "sd": 0.01, "ci95": [m - 0.02, m + 0.02], "ci95_clipped": False, "n": 3}  # noqa: E731
  run = lambda acc: {"final": {"train_loss": 0.1, "train_acc": 0.99, "test_acc": acc}}  # noqa: E731
  group = lambda acc: {"runs": [run(acc)] * 3, "test_acc_mean": acc, "test_acc_sd": 0.0, "gap_mean": 0.01,  # noqa: E731
                       "gap_sd": 0.0, "test_loss_mean": 0.2, "test_loss_sd": 0.0}
  record = {"epochs": 5, "groups": {"dropout 0.2/0.5": group(0.97), "no dropout": group(0.96)}}
  assert "R-Drop" not in "\n".join(report_section(record, 3))
  record["groups"]["dropout 0.2/0.5, R-Drop α=1"] = group(0.975)
  record["r_drop"] = {"alpha": 1.0, "seeds": 3, "without": summary(0.97), "with": summary(0.975),
                      "difference": summary(0.005)}
  text = "\n".join(report_section(record, 3))
  assert "| dropout 0.2/0.5, R-Drop α=1 | 0.9750 ± 0.0000 |" in text
  assert "test accuracy 0.9750 (95 % CI 0.9550 to 0.9950) against 0.9700 (95 % CI 0.9500 to 0.9900)" in text
  assert "seed by seed, 0.0050 (95 % CI -0.0150 to 0.0250) over 3 seeds (the interval contains 0" in text
  record["r_drop"]["difference"] = {**summary(0.005), "ci95": [0.001, 0.009]}
  assert "(the interval excludes 0: R-Drop raised test accuracy)" in "\n".join(report_section(record, 3))


@pytest.mark.parametrize("name", ["e1", "e2"])
def test_e1_and_e2_run_offline_on_real_mnist_with_the_source_networks(tmp_path, name):
  options = {"versions": ("concise",)} if name == "e2" else {"log_every": 1000}
  record = run_experiment(name, tmp_path, epochs=1, **options)
  assert record["dataset"]["name"] == "mnist_5k" and record["dataset"]["train_size"] == 4000
  note = record["dataset"]["note"]  # the seeds' networks as they are: 28x28 inputs, nothing adapted
  assert "5,000 real MNIST digits (28x28" in note and "adapted" not in note


def test_e5_runs_offline(tmp_path):
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int32
    run_experiment("e5", tmp_path, epochs=1)
  record = check_record(tmp_path, "e5")
  assert "row" in record["dataset"]["note"]


@pytest.mark.parametrize("name", ["e3", "e6", "e7", "e8", "e9"])
def test_offline_experiments_run(small_records, name):
  root, records = small_records
  check_record(root / name, name)
  assert records[name]["runs"]


def test_every_script_is_found_and_named_after_its_file():
  for module_name, module in registry.SCRIPTS.items():
    assert module.EXPERIMENT.name == module_name.split("_")[0], module_name  # e2_d2l_mlp.py is e2
    part = module.EXPERIMENT.part
    assert part is None or callable(part.section), module_name
  assert list(EXPERIMENTS) == [m.split("_")[0] for m in registry.SCRIPTS]
  assert registry.e2_d2l_mlp is registry.SCRIPTS["e2_d2l_mlp"]  # the old import path still works


def test_e7_runs_the_seeds_l1_and_a_smaller_one_that_still_learns(small_records):
  _, records = small_records
  runs = {r["name"]: r for r in records["e7"]["runs"]}
  assert list(runs) == ["none", "l1", "l1_small", "l2"]
  assert records["e7"]["config"]["l1"] == 0.01 and records["e7"]["config"]["l1_small"] == 1e-4
  # The seed's L1 dithers every weight at about lr * lambda / 2 around 0 (here from the first steps on).
  l1 = runs["l1"]
  assert l1["l1_norm"] == pytest.approx(l1["parameter_count"] * 0.5 * 0.01 / 2, rel=0.05)
  assert runs["l1_small"]["l1_norm"] > 2 * l1["l1_norm"]


def test_a_ci_of_an_accuracy_stays_in_its_range(small_records):
  _, records = small_records
  for part in ("e8", "e9"):
    for run in records[part]["runs"]:
      for name, summary in run.get("summary", {}).items():
        if "acc" in name:
          assert 0 <= summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1] <= 1, (part, name)
  for predictor in records["e9"]["runs"][0]["uncertainty"]["summary"].values():
    assert 0 <= predictor["ece"]["ci95"][0] and predictor["ece"]["ci95"][1] <= 1
    assert 0 <= predictor["entropy_wrong"]["ci95"][0]


def test_the_dropout_comparison_measures_the_gap_with_dropout_off(small_records):
  _, records = small_records
  record = records["dropout"]
  assert record["train_metrics"].startswith("train (a pass over the training set, dropout off")
  for group in record["groups"].values():
    gaps = [r["final"]["train_acc"] - r["final"]["test_acc"] for r in group["runs"]]
    assert group["gap_mean"] == pytest.approx(np.mean(gaps))


def test_e8_compares_jaxdrop_with_flax_over_seeds_with_step_costs(small_records):
  _, records = small_records
  runs = {r["name"]: r for r in records["e8"]["runs"]}
  assert set(runs) == {"jaxdrop", "flax"}
  for run in runs.values():
    summary = run["summary"]["test_acc"]
    assert run["seeds"] == [0, 1] and summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    assert run["cost"]["step_ms"] > 0 and run["cost"]["temp_mib"] > 0
    assert run["execution"]["path"] == "scan"
  # key-only attention dropout: one train step needs less compiled memory than with Flax's dropout
  assert runs["jaxdrop"]["cost"]["temp_mib"] < runs["flax"]["cost"]["temp_mib"]
  assert runs["jaxdrop"]["param_sha256"] != runs["flax"]["param_sha256"]


def test_e8s_reduced_suite_skips_the_step_costs_and_says_where_they_are_measured(small_records):
  _, records = small_records
  record = records["e8"]
  assert e8_vit.SUITE["step_costs"] is False and e8_vit.EXPERIMENT.part.quick["step_costs"] is True
  without = {**record, "config": {**record["config"], "step_costs": False},
             "runs": [{k: v for k, v in r.items() if k != "cost"} for r in record["runs"]]}
  section = "\n".join(e8_vit.report_section(without, 2))
  assert "not measured here (`python -m experiments run e8` measures them)" in section
  assert section.count("| not measured here | not measured here |") == 2
  assert "timed side by side" in "\n".join(e8_vit.report_section(record, 2))


def test_e9_reports_calibration_and_entropy_over_seeds(small_records):
  root, records = small_records
  (run,) = records["e9"]["runs"]
  result = run["uncertainty"]
  assert [s["seed"] for s in result["per_seed"]] == run["seeds"] == [0, 1]
  for predictor in ("deterministic", "mc_dropout"):
    summary = result["summary"][predictor]
    assert set(summary) == {"accuracy", "ece", "entropy_correct", "entropy_wrong"}
    assert summary["ece"]["ci95"][0] <= summary["ece"]["mean"] <= summary["ece"]["ci95"][1] and 0 <= summary["ece"]["mean"] <= 1
    table = result["reliability"][predictor]
    assert sum(table["count"]) == 2 * records["e9"]["dataset"]["test_size"]  # two seeds pooled
  # the deterministic network's accuracy is the trained run's test accuracy, seed by seed
  for seed_entry, per_seed in zip(run["per_seed"], result["per_seed"], strict=True):
    assert per_seed["deterministic"]["accuracy"] == pytest.approx(seed_entry["final"]["test_acc"], abs=1e-6)
  assert (root / "e9" / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_options_are_config_errors():
  with pytest.raises(ConfigError, match="unknown option"):
    run_experiment("e3", "/nonexistent", epoch=3)
  with pytest.raises(ConfigError, match="--dropout1 must be a drop probability"):
    run_experiment("e2", "/nonexistent", dropout1=1.5)
  with pytest.raises(ConfigError, match="unknown experiment 'e0'; choose one of e1, e2"):
    run_experiment("e0", "/nonexistent")  # no script is e0_*.py
  with pytest.raises(ConfigError, match="--dataset: invalid choice 'breast_cancer'"):
    run_experiment("e8", "/nonexistent", dataset="breast_cancer")
  assert list(EXPERIMENTS)[:9] == [f"e{i}" for i in range(1, 10)]  # and any added since
