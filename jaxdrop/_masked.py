"""The one kernel behind every mask-based variant: ``where(mask, x * scale + shift, fill)``.

Its ``custom_vjp`` keeps the mask generator's seed (8 bytes) as the only
residual and regenerates the mask in the backward pass, so no mask is stored
between the forward and backward passes. The gradient is
``where(mask, g * scale, 0)`` whichever way the mask is obtained, so it is
bitwise the same as differentiating the stored-mask version
(:func:`masked_affine_stored`, kept for tests and benchmarks).

Forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``), which a
``custom_vjp`` does not support, is detected from the input's tracers and
takes the stored-mask formulation, whose plain autodiff supports every mode
(and gives the same values). One case cannot be detected: ``jax.jvp`` of a
function that was ``jax.jit``-compiled before the ``jvp`` (jit inside jvp); put
the ``jit`` outside (``jax.jit(jax.jvp(...))``) there.

Memory: outside differentiation the random words are materialized on CPU
(faster, a transient ``bits / 8`` bytes per element); under differentiation
both passes hash them inside their fusions, so a train step needs no buffer
for dropout beyond what the same step without dropout needs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop._bits import bernoulli_lanes
from jaxdrop._checks import compute_dtype

__all__ = ["masked_affine", "masked_affine_stored"]


def _affine(x, scale, shift):
  xc = x.astype(compute_dtype(x.dtype))
  out = xc * scale.astype(xc.dtype)
  if shift is not None:
    out = out + shift.astype(xc.dtype)
  return out.astype(x.dtype)


def _select(mask, x, scale, shift, fill):
  kept = _affine(x, scale, shift)
  if fill is None:
    fill = jnp.zeros((), x.dtype)
  return jnp.where(jnp.broadcast_to(mask, x.shape), kept, fill.astype(x.dtype))


def masked_affine_stored(seed, x, threshold, scale, shift=None, fill=None, *, mask_shape, bits, materialize=True):
  """``where(mask, x * scale + shift, fill)``, differentiated by plain autodiff."""
  mask = bernoulli_lanes(seed, mask_shape, threshold, bits, materialize=materialize)
  return _select(mask, x, scale, shift, fill)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _masked_affine(seed, x, threshold, scale, shift, fill, mask_shape, bits):
  return masked_affine_stored(seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits)


def _masked_affine_fwd(seed, x, threshold, scale, shift, fill, mask_shape, bits):
  y = masked_affine_stored(
      seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits, materialize=False
  )
  return y, (seed, threshold, scale)


def _masked_affine_bwd(mask_shape, bits, residuals, g):
  seed, threshold, scale = residuals
  mask = bernoulli_lanes(seed, mask_shape, threshold, bits, materialize=False)
  gx = _select(mask, g, scale, None, None)
  return None, gx, None, None, None, None


_masked_affine.defvjp(_masked_affine_fwd, _masked_affine_bwd)


def masked_affine(seed, x, threshold, scale, shift=None, fill=None, *, mask_shape, bits):
  """``where(mask, x * scale + shift, fill)`` with a key-only residual for the backward pass.

  Args:
    seed: ``uint32[2]`` seed of the mask generator.
    x: floating array.
    threshold: lane threshold; ``mask`` is ``True`` (keep) below it.
    scale: scalar multiplier of kept elements.
    shift: optional scalar added to kept elements.
    fill: optional scalar for dropped elements (zero when ``None``).
    mask_shape: shape of the mask, broadcastable to ``x.shape``.
    bits: lane width of the mask, 8, 16 or 32.

  Returns:
    An array like ``x``. Not differentiable with respect to ``scale``,
    ``shift`` or ``fill`` (their cotangents are zero).
  """
  threshold = jnp.asarray(np.uint32(threshold) if isinstance(threshold, int) else threshold, jnp.uint32)
  if _in_forward_mode(x):
    return masked_affine_stored(seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits,
                                materialize=False)
  return _masked_affine(seed, x, threshold, scale, shift, fill, mask_shape, bits)


def _in_forward_mode(x) -> bool:
  """Whether ``x`` carries a forward-mode tangent (``jax.jvp``) at any level of its trace stack.

  Walks the tracers' private ``primal``/``val`` links (jax's ``JVPTracer``,
  ``LinearizeTracer``, ``BatchTracer``); where jax changes them, it answers
  ``False`` and the custom_vjp path (and jax's own error) applies.
  """
  try:
    from jax._src.interpreters.ad import JVPTracer
  except ImportError:  # pragma: no cover - a jax without it
    return False
  for _ in range(32):
    if isinstance(x, JVPTracer):
      return True
    if not isinstance(x, jax.core.Tracer):
      return False
    x = getattr(x, "primal", None) if hasattr(x, "primal") else getattr(x, "val", None)
  return False
