"""E10: the byte-level transformer LM on the standard library, on its quick run (2 seeds)."""

import hashlib
import math
import sysconfig
from pathlib import Path

import pytest

from experiments import e10_char_lm as e10
from experiments.errors import ConfigError


@pytest.fixture(scope="module")
def quick(small_records):
  """E10's quick run (its part's ``quick`` options, 2 seeds), shared with the other parts' tests."""
  root, records = small_records
  return root, records["e10"]


def test_the_record_pins_the_corpus_files_and_their_hashes(quick):
  _, record = quick
  corpus = record["corpus"]
  assert [f["name"] for f in corpus["files"]] == sorted(e10.STDLIB_FILES) == list(e10.STDLIB_FILES)
  root = Path(sysconfig.get_paths()["stdlib"])
  assert corpus["stdlib"] == str(root)
  for f in corpus["files"]:
    text = (root / f["name"]).read_bytes()
    assert f["sha256"] == hashlib.sha256(text).hexdigest() and f["bytes"] == len(text)
  assert corpus["total_bytes"] == sum(f["bytes"] for f in corpus["files"])
  assert corpus["split_at"] == int(corpus["total_bytes"] * (1 - e10.VALID_FRACTION))


def test_windows_are_shifted_by_one_and_the_validation_split_is_the_end():
  config = e10.E10Config(context=64, max_train_windows=3, max_valid_windows=2, batch_size=2)
  data, corpus = e10.char_data(config)
  text, _ = e10.corpus()
  assert data.x_train.shape == data.y_train.shape == (3, 64) and data.x_test.shape == (2, 64)
  assert (data.x_train[:, 1:] == data.y_train[:, :-1]).all()
  assert bytes(data.x_train[1].astype("uint8")) == text[64:128]  # windows do not overlap
  split = corpus["split_at"]
  assert bytes(data.x_test[0].astype("uint8")) == text[split:split + 64]
  assert int(data.y_test[0, -1]) == text[split + 64]


def test_validation_bits_per_character_over_seeds(quick):
  _, record = quick
  (run,) = record["runs"]
  s = run["valid_bpc"]
  assert s["n"] == 2 and run["seeds"] == [0, 1]
  assert math.isfinite(s["mean"]) and 0 < s["mean"] < math.log2(e10.VOCAB)  # better than uniform bytes
  assert s["ci95"][0] <= s["mean"] <= s["ci95"][1] <= math.log2(e10.VOCAB)
  # bits are the engine's nats per token over ln 2, per seed
  for seed in run["per_seed"]:
    bpc = seed["history"]["test_bpc"][-1]
    assert bpc == pytest.approx(seed["final"]["test_loss"] / math.log(2), rel=1e-12)


def test_blockwise_attention_dropout_needs_less_memory_than_flax_at_the_same_length(quick):
  _, record = quick
  costs = record["runs"][0]["cost"]
  assert set(costs) == {"jaxdrop", "flax"}
  for c in costs.values():
    assert c["step_ms"] > 0 and c["temp_mib"] > 0 and c["context"] == record["config"]["context"]
  assert costs["jaxdrop"]["temp_mib"] < costs["flax"]["temp_mib"]


def test_the_figure_exists_and_the_report_links_it(quick):
  root, record = quick
  assert record["figures"] == ["curves.png"]
  assert (root / "e10" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  section = "\n".join(e10.report_section(record, 2))
  assert "](e10/curves.png)" in section and "bits per character" in section
  assert "not searched here" in section  # the quick run skips the search (see the next test)


def test_the_reduced_suite_skips_the_step_costs_and_says_where_they_are_measured(quick):
  _, record = quick
  assert e10.SUITE["step_costs"] is False and e10.EXPERIMENT.part.quick["step_costs"] is True
  (run,) = record["runs"]
  without = {**record, "runs": [{k: v for k, v in run.items() if k != "cost"}]}
  section = "\n".join(e10.report_section(without, 2))
  assert "not measured here (`python -m experiments run e10` measures them" in section
  assert "| jaxdrop blockwise |" not in section and "| jaxdrop blockwise |" in "\n".join(e10.report_section(record, 2))


def test_the_memory_search_needs_the_step_costs():
  with pytest.raises(ConfigError, match="--search-memory .* --no-step-costs, or add --no-search-memory"):
    e10.E10Config(step_costs=False).validate()
  e10.E10Config(step_costs=False, search_memory=False).validate()
  with pytest.raises(ConfigError, match="--heads 3 must divide --dim 64"):
    e10.E10Config(heads=3).validate()


@pytest.mark.parametrize("memory", [lambda n: n * 2**20, lambda n: 100 * 2**20 + n * n * 64])
def test_the_longest_context_search_brackets_the_true_limit(monkeypatch, memory):
  # The search's logic on a memory model (compiling a real step takes seconds; the full form runs it).
  monkeypatch.setattr(e10, "temp_bytes", lambda version, config, n: memory(n))
  config, limit = e10.E10Config(context=1024), 8 * 2**30
  found = e10.longest_context("jaxdrop", config, limit, known={1024: memory(1024)})
  longest, over = found["longest"], found["over"]
  assert longest % e10.GRANULE == 0 and longest >= config.context
  assert memory(longest) <= limit < memory(over)
  assert over - longest <= max(e10.GRANULE, over // 8)
  probed = {p["context"] for p in found["probes"]}
  assert {1024, 2048, longest, over} <= probed


def test_a_context_longer_than_the_corpus_is_a_config_error():
  with pytest.raises(ConfigError, match="--context 10000000 leaves 0 training"):
    e10.char_data(e10.E10Config(context=10_000_000))
