"""Tree comparisons over np.testing (optax and flax dropped chex).

Which to use (issue 17, item 2):

- ``assert_trees_equal``: bitwise, only between runs of the same program, or where two paths are equal by
  construction (say how in a comment at the call).
- ``assert_close_ulp``: float results of two different programs (jit vs eager, traced vs Python rate,
  vmap vs loop, scan vs loop, sharded vs unsharded, ...): a few units in the last place.
- ``assert_same_mask``: the zero pattern (or another boolean pattern) exactly, next to a tolerance on the
  values: masks stay exact.
"""

import jax
import jax.numpy as jnp
import numpy as np


def assert_trees_equal(actual, expected):
  """Same structure and bitwise-equal leaves (NaNs compare equal).

  For runs of the same program, or paths equal by construction (say how in a comment at the call).
  """
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    a, e = np.asarray(a), np.asarray(e)
    assert a.dtype == e.dtype, (a.dtype, e.dtype)
    np.testing.assert_array_equal(a, e)


def assert_trees_close(actual, expected, *, rtol=1e-6, atol=0.0):
  """Same structure and leaves within an elementwise ``rtol`` and ``atol`` (np.testing.assert_allclose)."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def ulp_of(value, dtype) -> np.ndarray:
  """The spacing of ``dtype``'s values at ``|value|`` (a unit in the last place), as float64.

  Subnormal and zero magnitudes get the smallest spacing, ``eps * tiny``.
  """
  info = jnp.finfo(dtype)
  magnitude = np.maximum(np.abs(np.asarray(value, np.float64)), float(info.tiny))
  return float(info.eps) * np.exp2(np.floor(np.log2(magnitude)))


def assert_close_ulp(actual, expected, ulp=4, *, scale=None, dtype=None):
  """Same structure, dtypes, shapes, NaNs and infinities; finite values within ``ulp`` ulps of each other.

  For float results of two different programs (jit vs eager, traced vs Python rate, vmap vs loop, sharded vs
  unsharded, ...). Masks are not covered by a tolerance: check them with ``assert_same_mask``.

  Args:
    actual: a tree of float arrays (or of Python floats, with ``dtype``).
    expected: a tree of the same structure.
    ulp: the allowed distance, in units in the last place of ``expected``'s dtype.
    scale: ``None``: ulps of each element (results one elementwise op apart, e.g. a multiply by a scale);
      ``"max"``: ulps of the leaf's largest finite ``|expected|`` (sums, matmuls, recurrences, training:
      where cancellation makes a small element's own ulp meaningless).
    dtype: compare as this dtype (``np.float32`` for histories of Python floats made from float32 values).
  """
  assert scale in (None, "max"), scale
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    a, e = (np.asarray(v) if dtype is None else np.asarray(v, dtype) for v in (a, e))
    assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, e.dtype, a.shape, e.shape)
    assert jnp.issubdtype(a.dtype, jnp.floating), a.dtype
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    finite = np.isfinite(e64)
    np.testing.assert_array_equal(a64[~finite], e64[~finite])  # NaN where NaN, the same infinities
    a64, e64 = a64[finite], e64[finite]
    unit = ulp_of(np.max(np.abs(e64), initial=0.0) if scale == "max" else e64, a.dtype)
    distance = np.abs(a64 - e64) / unit  # inf where actual is not finite but expected is
    worst = int(np.argmax(distance)) if distance.size else 0
    assert np.all(distance <= ulp), (
        f"{np.sum(distance > ulp)} of {distance.size} elements more than {ulp} ulp apart (scale={scale!r}); "
        f"the worst {distance[worst]:.3g} ulp: {float(a64[worst])!r} vs {float(e64[worst])!r}")


def assert_same_mask(actual, expected, pattern=lambda v: v == 0):
  """The same zero pattern (or ``pattern``), exactly: masks stay exact when values take a tolerance."""
  np.testing.assert_array_equal(pattern(np.asarray(actual)), pattern(np.asarray(expected)))


def vjp_residuals(f, x):
  """The shapes and dtypes (``ShapeDtypeStruct`` leaves) that reverse mode keeps between ``f``'s forward and
  backward passes."""
  return jax.tree.leaves(jax.eval_shape(lambda x: jax.vjp(f, x)[1], x))
