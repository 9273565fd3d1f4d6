"""Test-wide JAX settings: strict promotion, and key reuse is an error."""

import jax
from hypothesis import settings

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

# Fixed example sequences (never flaky) and no deadline (first calls compile).
settings.register_profile("jaxdrop", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("jaxdrop")
