"""Test-wide JAX settings: 8 simulated CPU devices, strict promotion, and key reuse is an error."""

import os

# Before JAX starts its backend: 8 host devices, so that sharded programs (tests/test_sharding.py) run on
# any CPU. Single-device code still runs on device 0.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

# Fixed example sequences (never flaky) and no deadline (first calls compile).
settings.register_profile("jaxdrop", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("jaxdrop")
