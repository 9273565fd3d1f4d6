"""Fixtures shared by the experiment and report tests."""

import jax
import pytest

from jaxdrop import reproduce
from jaxdrop.experiments import run_experiment


@pytest.fixture(scope="session")
def small_records(tmp_path_factory):
  """Short offline runs of the report's parts (E3, dropout comparison, E7, E6), once per session."""
  root = tmp_path_factory.mktemp("small")
  records = {}
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam (E6's convnet) mixes float and int32
    for name, options in (("e3", dict(seeds=2, epochs=10)), ("e7", dict(epochs=2)),
                          ("e6", dict(epochs=2, convnet_epochs=1))):
      (root / name).mkdir()
      records[name] = run_experiment(name, root / name, **options)
    records["dropout"] = reproduce.compare_dropout(root / "dropout", 2, lambda line: None, True, epochs=2)
  return root, records
