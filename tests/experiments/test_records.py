"""Run records: parameter hashes, atomic JSON, output folders."""

import json
import os
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest

import experiments
import jaxdrop
from experiments import records
from experiments.files import read_json, write_json
from experiments.records import PINNED, environment, environment_differences, metric_range, seed_summary
from jaxdrop.training import param_sha256


def test_param_hash_sees_values_dtypes_shapes_and_paths():
  base = {"a": jnp.zeros((2, 3)), "b": jnp.ones(3)}
  h = param_sha256(base)
  assert h == param_sha256({"a": jnp.zeros((2, 3)), "b": jnp.ones(3)})
  assert h != param_sha256({"a": jnp.zeros((2, 3)), "b": jnp.ones(3).at[0].set(1.0000001)})
  assert h != param_sha256({"a": jnp.zeros((3, 2)), "b": jnp.ones(3)})
  assert h != param_sha256({"a": jnp.zeros((2, 3), jnp.bfloat16), "b": jnp.ones(3)})
  assert h != param_sha256({"c": jnp.zeros((2, 3)), "b": jnp.ones(3)})
  assert len(h) == 64


def test_write_json_replaces_atomically(tmp_path):
  path = tmp_path / "record.json"
  write_json(path, {"x": 1})
  write_json(path, {"x": float("nan"), "y": [1, 2]})
  assert json.loads(path.read_text().replace("NaN", "null")) == {"x": None, "y": [1, 2]}
  assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary files left
  with pytest.raises(TypeError):
    write_json(path, {"x": object()})
  assert json.loads(path.read_text().replace("NaN", "null"))["y"] == [1, 2]  # the old file survived


def test_written_json_is_readable_by_the_group_under_the_usual_umask(tmp_path):
  old = os.umask(0o022)
  try:
    write_json(tmp_path / "record.json", {"x": 1})
  finally:
    os.umask(old)
  assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o644


def test_environment_names_versions_and_device():
  env = environment()
  for key in ("jax", "jaxlib", "flax", "optax", "backend", "device_kind"):
    assert env[key]


def test_read_json_refuses_deep_nesting_in_one_line(tmp_path):
  (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
  with pytest.raises(ValueError, match="^its JSON is nested too deeply to be a jaxdrop file$"):
    read_json(tmp_path / "deep.json")


def test_a_damaged_environment_is_a_difference_not_a_pass():
  for damaged in ([], ["jax"], "jax", None, 3):  # each once skipped the check ("jax" in "jax" is True, too)
    (difference,) = environment_differences(damaged, environment())
    assert difference.startswith("environment: the run recorded") and "(a damaged file)" in difference


def test_the_source_hash_covers_the_library_and_the_experiments(tmp_path):
  library, scripts = Path(jaxdrop.__file__).parent, Path(experiments.__file__).parent
  ignore = shutil.ignore_patterns("__pycache__")
  shutil.copytree(library, tmp_path / "jaxdrop", ignore=ignore)
  shutil.copytree(scripts, tmp_path / "experiments", ignore=ignore)
  fingerprint = lambda: records._sources_sha256(tmp_path / "jaxdrop", tmp_path / "experiments")
  copied = fingerprint()
  assert re.fullmatch("[0-9a-f]{64}", copied)
  assert copied == records._sources_sha256(library, scripts)  # relative paths: the same code anywhere
  models = tmp_path / "experiments" / "models.py"
  original = models.read_text()
  assert "nn.relu" in original
  models.write_text(original.replace("nn.relu", "jnp.tanh", 1))  # the edit that once resumed silently
  assert fingerprint() != copied
  models.write_text(original)
  assert fingerprint() == copied
  (tmp_path / "jaxdrop" / "training" / "extra.py").write_text("")  # a new library module, however deep
  assert fingerprint() != copied
  (tmp_path / "jaxdrop" / "training" / "extra.py").unlink()
  (tmp_path / "experiments" / "notes.md").write_text("not code")  # what the hash does not cover
  (tmp_path / "experiments" / "sub").mkdir()
  (tmp_path / "experiments" / "sub" / "x.py").write_text("")
  assert fingerprint() == copied


def test_the_code_fingerprint_is_recorded_with_its_commit_as_information(tmp_path, monkeypatch):
  env = environment()
  assert "source_sha256" in PINNED and {"git_commit", "git_dirty"}.isdisjoint(PINNED)
  assert re.fullmatch("[0-9a-f]{64}", env["source_sha256"])
  assert env["git_commit"] is None or (re.fullmatch("[0-9a-f]{40}", env["git_commit"])
                                       and isinstance(env["git_dirty"], bool))
  assert records._git(tmp_path, "rev-parse", "--verify", "HEAD") is None  # no repository: None, not an error
  monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
  assert records._git(Path(experiments.__file__).parent, "rev-parse", "--verify", "HEAD") is None


def test_a_seed_summary_is_the_t_interval_cut_to_the_metrics_range():
  wide = seed_summary([0.05, 0.1])  # two seeds: t = 12.7, the interval reaches far below 0
  assert wide["ci95"][0] < 0 < wide["ci95"][1] < 1 and not wide["ci95_clipped"]
  clipped = seed_summary([0.05, 0.1], metric_range("train_acc"))
  assert clipped["ci95"] == [0.0, wide["ci95"][1]] and clipped["ci95_clipped"]
  assert clipped["mean"] == wide["mean"] and clipped["sd"] == wide["sd"]
  assert seed_summary([0.99, 0.999], metric_range("test_acc"))["ci95"][1] == 1.0
  inner = seed_summary([0.5, 0.51, 0.49], metric_range("test_acc"))
  assert 0 < inner["ci95"][0] < inner["ci95"][1] < 1 and not inner["ci95_clipped"]
  assert metric_range("test_loss") == (0.0, float("inf")) and metric_range("gap") == (float("-inf"), float("inf"))
