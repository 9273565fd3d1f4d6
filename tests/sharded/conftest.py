"""The sharded suite runs only in a process that JAX started with 8 devices (see tests/test_sharded_suite.py)."""

import jax
import pytest


@pytest.fixture(autouse=True)
def eight_devices():
  assert jax.device_count() == 8, "run through tests/test_sharded_suite.py, which sets XLA_FLAGS for 8 devices"
