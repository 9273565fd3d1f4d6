"""Run records: parameter hashes, atomic JSON, output folders."""

import json
import os

import jax.numpy as jnp
import pytest

from jaxdrop.errors import OutputExistsError
from jaxdrop.records import environment, param_sha256, prepare_output_dir, write_json


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


def test_output_folder_is_never_reused_silently(tmp_path):
  out = prepare_output_dir(tmp_path / "run")
  (out / "record.json").write_text("{}")
  with pytest.raises(OutputExistsError, match="--overwrite"):
    prepare_output_dir(out)
  assert prepare_output_dir(out, overwrite=True) == out
  assert prepare_output_dir(tmp_path / "empty") == tmp_path / "empty"


def test_unwritable_output_folder_is_reported(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(PermissionError, match=f"cannot write to output folder {blocker / 'run'}"):
    prepare_output_dir(blocker / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  with pytest.raises(PermissionError, match="cannot write"):
    prepare_output_dir(ro / "run")


def test_environment_names_versions_and_device():
  env = environment()
  for key in ("jax", "jaxlib", "flax", "optax", "backend", "device_kind"):
    assert env[key]
