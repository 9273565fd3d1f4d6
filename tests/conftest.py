"""Fixtures shared by the experiment and report tests.

``tests/sharded/`` needs 8 devices, which a process gets only before JAX starts: it runs in a process of
its own, which ``tests/test_sharded_suite.py`` starts with 8 simulated CPU devices.
"""

import fcntl
import json
import os
import signal

import jax
import pytest

from experiments import reproduce
from experiments.files import write_json
from tests.test_sharded_suite import SHARDED_SUITE

collect_ignore = [] if os.environ.get(SHARDED_SUITE) else ["sharded"]

# Tests of a minute or more (subprocesses, the report's runs): started first, so that the two workers
# (pyproject's "-n 2") do not end with one of them alone on a long test. The other readers of the small runs
# go last, when the first worker has computed them (see small_records).
SLOW_FIRST = (
    "tests/test_sharded_suite.py::", "tests/experiments/test_cli.py::test_report_renders_every_part",
    "tests/experiments/test_reproducibility.py::test_data_parallel_runs",
    "tests/jaxdrop/training/test_checkpoints.py::test_sigkill",
    "tests/experiments/test_reproducibility.py::test_same_seed_gives_bitwise",
    "tests/benchmarks/test_bench.py::test_the_training_sections_run_on_small_sizes",
)


def pytest_collection_modifyitems(config, items):
  def rank(item):
    first = next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), None)
    if first is not None:
      return first
    return len(SLOW_FIRST) + ("small_records" in getattr(item, "fixturenames", ()))

  items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture
def ctrl_c_as_in_a_terminal():
  """Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` in this test and in the processes it starts, as in a
  terminal, also where the test run is a job started in the background (``pytest &``, ``nohup``), which
  ignores SIGINT; the run's own disposition comes back after the test."""
  before = signal.getsignal(signal.SIGINT)
  if before is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # children start with SIGINT's default again
  yield
  signal.signal(signal.SIGINT, before)


# The seeds of the small runs of the report's parts.
SMALL_SEEDS = 2


@pytest.fixture(scope="session")
def small_records(tmp_path_factory, worker_id):
  """Short offline runs of the report's parts (each part's ``quick`` options, 2 seeds), once per test run.

  Returns ``(root, {part folder: record})``; each part's run is in ``root/<folder>``. The first pytest-xdist
  worker to ask computes them under a file lock in the run's shared temporary folder; the others read them
  from there.
  """
  shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
  root, done = shared / "small", shared / "small" / "records.json"
  with open(shared / "small.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      root.mkdir(exist_ok=True)
      write_json(done, _small_runs(root))
  return root, json.loads(done.read_text())


def _small_runs(root):
  records = {}
  with jax.numpy_dtype_promotion("standard"):  # optax's Adam (E6's convnet) mixes float and int32
    for folder, experiment in reproduce.parts().items():
      records[folder] = experiment.run_part(root / folder, SMALL_SEEDS, lambda line: None, True,
                                            **experiment.part.quick)
  return records
