"""E12 (dropout against data-set size) on tiny settings: nested balanced subsets, the record, the paired gains,
the verdict, the figure, a bitwise replay, and the options it refuses."""

import json

import numpy as np
import pytest

from experiments import data
from experiments.e12_dataset_size import E12Config, conclusion, nested_subsets, report_section
from experiments.errors import ConfigError
from experiments.registry import run_experiment
from experiments.replay import replay

TINY = {"sizes": (20, 40), "steps": 4, "seeds": 2, "hidden": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp("e12")
  return out, run_experiment("e12", out, **TINY)


def test_every_prefix_of_ten_k_images_holds_k_of_each_class():
  labels = np.asarray(data.load_dataset("mnist_5k").y_train)
  order = nested_subsets(labels)
  assert sorted(order.tolist()) == list(range(4000))  # a permutation of the training images
  for size in (10, 100, 500, 1000, 4000):
    assert np.bincount(labels[order[:size]], minlength=10).tolist() == [size // 10] * 10


def test_the_record_holds_both_variants_of_every_size_and_their_paired_gain(tiny):
  out, record = tiny
  assert [row["size"] for row in record["sizes"]] == [20, 40]
  names = [run["name"] for run in record["runs"]]
  assert names == ["no dropout, 20 images", "dropout, 20 images", "no dropout, 40 images", "dropout, 40 images"]
  for row in record["sizes"]:
    runs = [r for r in record["runs"] if r["name"].endswith(f", {row['size']} images")]
    errors = {r["name"].split(",")[0]: [1 - s["final"]["test_acc"] for s in r["per_seed"]] for r in runs}
    assert row["no dropout"]["mean"] == pytest.approx(np.mean(errors["no dropout"]))
    gains = np.subtract(errors["no dropout"], errors["dropout"])
    assert row["gain"]["mean"] == pytest.approx(gains.mean(), abs=1e-12) and row["gain"]["n"] == 2
    assert all(r["steps"] == 4 and len(r["param_sha256"]) == 2 for r in runs)
  assert record["conclusion"].startswith("The paper's result")
  assert (out / "size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and record["figures"] == ["size.png"]


def test_a_replay_of_e12_is_bitwise_identical(tiny, tmp_path):
  out, _ = tiny
  result = replay(out, tmp_path, quiet=True)
  assert result["identical"] and len(result["runs"]) == 8  # 2 sizes x 2 variants x 2 seeds
  assert json.loads((tmp_path / "replay.json").read_text())["identical"]


def test_the_section_gives_each_size_the_verdict_and_what_was_reduced(tiny):
  _, record = tiny
  text = "\n".join(report_section(record, 2))
  assert "| 20 | " in text and "| 40 | " in text and record["conclusion"] in text
  assert "sizes 20 40 (full: 100 500 1000 2000 4000)" in text and "steps 4 (full: 1500)" in text
  assert "![E12: test error against training-set size](e12/size.png)" in text


def row(size, gain_low, gain_mean):
  summary = lambda mean, low: {"mean": mean, "ci95": [low, mean + 0.01]}  # noqa: E731
  return {"size": size, "gain": summary(gain_mean, gain_low)}


@pytest.mark.parametrize(("table", "verdict"), [
    ([row(100, -0.02, 0.0), row(500, -0.01, 0.0), row(1000, 0.01, 0.02), row(4000, 0.005, 0.01)], "holds here ("),
    ([row(100, -0.02, 0.0), row(500, 0.01, 0.03), row(1000, 0.01, 0.02)], "holds in part here (below 1,000 images a"
                                                                          " gain at 500, from 1,000 on a gain"),
    ([row(100, -0.02, 0.0), row(1000, -0.01, 0.01), row(4000, 0.005, 0.01)], "holds in part here (below 1,000"
                                                                            " images no gain, from 1,000 on no"),
    ([row(100, 0.01, 0.03), row(1000, -0.01, 0.01)], "does not hold here"),
])
def test_the_verdict_follows_the_cis(table, verdict):
  text = conclusion(table)
  assert text.startswith(f"The paper's result {verdict}"), text
  assert all(f"{r['size']:,}: {r['gain']['mean']:+.4f}" in text for r in table)


@pytest.mark.parametrize(("options", "match"), [
    ({"sizes": (25,)}, "multiples of 10 in 10..4000"), ({"sizes": (5000,)}, "multiples of 10"),
    ({"sizes": ()}, "multiples of 10"), ({"epochs": 3}, "--epochs"), ({"checkpoint_every": 5}, "--checkpoint-every"),
    ({"dataset": "digits"}, "mnist_5k's nested subsets only"), ({"input_rate": 1.5}, "drop probability"),
])
def test_options_it_cannot_honour_are_refused(options, match):
  with pytest.raises(ConfigError, match=match):
    E12Config(**options).validate()
