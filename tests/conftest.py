"""Fixtures shared by the experiment and report tests.

``tests/sharded/`` needs 8 devices, which a process gets only before JAX starts: it runs in a process of
its own, which ``tests/test_sharded_suite.py`` starts with 8 simulated CPU devices.
"""

import os

import jax
import pytest

from jaxdrop import reproduce
from jaxdrop.experiments import run_experiment
from tests.test_sharded_suite import SHARDED_SUITE

collect_ignore = [] if os.environ.get(SHARDED_SUITE) else ["sharded"]

# A one-block ViT for two epochs: the experiment end to end, in seconds.
E8_SMALL = dict(epochs=2, seeds=2, dim=16, depth=1, heads=2, mlp_dim=16)


@pytest.fixture(scope="session")
def small_records(tmp_path_factory):
  """Short offline runs of the report's parts (E3, dropout comparison, E7, E6, E8), once per session."""
  root = tmp_path_factory.mktemp("small")
  records = {}
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam (E6's convnet) mixes float and int32
    for name, options in (("e3", dict(seeds=2, epochs=10)), ("e7", dict(epochs=2)),
                          ("e6", dict(epochs=2, convnet_epochs=1)), ("e8", E8_SMALL)):
      (root / name).mkdir()
      records[name] = run_experiment(name, root / name, **options)
    records["dropout"] = reproduce.compare_dropout(root / "dropout", 2, lambda line: None, True, epochs=2)
  return root, records
