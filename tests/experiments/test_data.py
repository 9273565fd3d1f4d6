"""Data sets: bundled, tfds (mocked, never the network), offline failures."""

import logging
import os
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import data
from experiments.errors import DatasetUnavailableError


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
