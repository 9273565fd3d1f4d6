"""Max pooling whose gradient is cheap on every backend.

``flax.linen.max_pool`` is ``lax.reduce_window``; its gradient is XLA's
``select_and_scatter``, which XLA:CPU runs as a slow scalar loop: in E4's CNN
it took more than half of the train step. Here the pool is the elementwise
maximum of the window's strided slices, so the gradient is slices, pads and
selects, which fuse. The value is the same as ``flax.linen.max_pool``'s; the
gradient is the same except where a window holds several equal maxima (flax
gives it to one of them, this splits it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["max_pool"]


def max_pool(
    x: jax.Array,
    window: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> jax.Array:
  """Max pooling over the spatial axes of ``x`` (``(batch, *spatial, features)``, as flax).

  Args:
    x: the input, ``N`` spatial axes between the batch and feature axes.
    window: the window's size along each spatial axis.
    strides: the step along each spatial axis (default: 1).
    padding: ``"VALID"``, ``"SAME"`` or one ``(low, high)`` pair per spatial
      axis; padded positions hold ``-inf`` as in ``flax.linen.max_pool``.

  Returns:
    The pooled array.

  Example:
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, (2, 2), (2, 2))[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
  """
  window = tuple(window)
  spatial = x.ndim - 2
  if len(window) != spatial:
    raise ValueError(f"window must have one size per spatial axis ({spatial}), got {window}.")
  strides = tuple(strides) if strides is not None else (1,) * spatial
  if len(strides) != spatial:
    raise ValueError(f"strides must have one step per spatial axis ({spatial}), got {strides}.")
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(x.shape[1:-1], window, strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  if any(p != (0, 0) for p in pads):
    fill = jnp.array(-jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype)
    x = lax.pad(x, fill, [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
  out_shape = [(size - w) // s + 1 for size, w, s in zip(x.shape[1:-1], window, strides, strict=True)]
  if any(n < 1 for n in out_shape):
    raise ValueError(f"window {window} is larger than the (padded) input {x.shape[1:-1]}.")

  def window_slice(offsets):
    start = (0, *offsets, 0)
    limit = (x.shape[0], *(o + (n - 1) * s + 1 for o, n, s in zip(offsets, out_shape, strides, strict=True)),
             x.shape[-1])
    return lax.slice(x, start, limit, (1, *strides, 1))

  offsets = np.indices(window).reshape(spatial, -1).T.tolist()
  return functools.reduce(jnp.maximum, (window_slice(tuple(o)) for o in offsets))
