"""Data-parallel experiments on 4 of this process's 8 simulated devices, under JAX's default partitioner."""

from experiments.registry import run_experiment


def test_several_seeds_train_data_parallel_one_after_the_other(tmp_path):
  record = run_experiment("e2", tmp_path, dataset="digits", versions=("concise",), epochs=1, seeds=2, devices=4)
  (run,) = record["runs"]
  assert run["execution"]["devices"] == 4 and [s["seed"] for s in run["per_seed"]] == [0, 1]
  assert run["per_seed"][0]["param_sha256"] != run["per_seed"][1]["param_sha256"]
  assert run["summary"]["test_acc"]["n"] == 2
