"""Run records: parameter hashes, atomic JSON, output folders."""

import json
import os

import jax.numpy as jnp
import pytest

from experiments.records import environment, param_sha256, write_json


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
