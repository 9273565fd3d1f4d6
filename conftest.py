"""Test-wide JAX settings: strict promotion, key reuse is an error, and a compilation cache for the session."""

import atexit
import os
import shutil
import tempfile

# Many tests compile the same programs again (every engine.fit builds its jitted epoch anew; resumed and
# repeated runs in subprocesses compile what an earlier process did). A persistent compilation cache,
# fresh for this session and shared with its subprocesses, loads them instead: same executables, less
# wall time. Set before JAX reads its configuration.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdrop-tests-xla-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

# Subprocesses (python -m experiments, the sharded suite) import the repository's experiments/ and tests/
# packages from wherever pytest was started.
_ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

# jaxdrop/training/xla_cpu.py replaces itself in sys.modules by jaxdrop/xla_cpu.py (one module under two
# names); --doctest-modules would import it as a file and stop at the mismatch. Its doctests are jaxdrop.xla_cpu's.
collect_ignore = ["jaxdrop/training/xla_cpu.py"]

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

# Fixed example sequences (never flaky) and no deadline (first calls compile).
settings.register_profile("jaxdrop", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("jaxdrop")
