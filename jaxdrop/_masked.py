"""The one kernel behind every mask-based variant: ``where(mask, x * scale + shift, fill)``,
the dropout on checked arguments that the variants share (:func:`masked_dropout`), and the one place where
a probability becomes a lane threshold (:func:`lane_threshold`, :func:`keep_for`).

Under differentiation the residual of the backward pass is the mask
generator's seed (8 bytes), the threshold and the scale; on XLA:CPU, when the
mask can be packed (:func:`jaxdrop._packed_mask.packable`: a multiple of
``8 * (32 // bits)`` elements, one device), it is the mask packed to one bit an
element instead (``n / 8`` bytes, 1/32 of a float32 activation). The mask is
never stored unpacked. The kernel is a ``jax.custom_jvp``:

* its primal rule (no differentiation) is the fast forward pass, with the
  random words materialized on CPU;
* its JVP rule returns the primal and the tangent ``where(mask, t, 0) * scale``,
  linear in ``t``, computed by a function of ``(seed, threshold, scale, t)``
  (and of the packed mask) that is rematerialized (``jax.checkpoint``, saving
  nothing) and is itself one ``custom_jvp`` call (its own tangent). Under
  ``jax.linearize``, ``jax.vjp`` and ``jax.grad``, partial evaluation therefore
  cannot hoist the mask out of it into the forward pass: the residuals are its
  inputs, and the transpose ``where(mask, g * scale, 0)`` regenerates the mask
  from the seed (or unpacks it), also under an enclosing ``jax.checkpoint``
  whatever its policy.

Where the mask is packed, the choice is made at lowering
(``lax.platform_dependent``): on XLA:CPU the forward pass hashes each word
once into the packed bits and the backward pass unpacks them, so it hashes
nothing (on CPU the hash is most of dropout's cost; docs/benchmarks.md gives
the train steps before and after). On every other platform the forward pass
hashes inside its fusion and the backward pass regenerates the mask from the
seed, as before. Lowered for one platform, the other branch is gone: a program
for CUDA holds no 8-bit array. A program exported for several platforms keeps,
on the others, a placeholder of zeros (``n / 8`` bytes) that nothing reads.

For a finite scale the gradient is bitwise the one of differentiating the
stored-mask version (:func:`masked_affine_stored`, kept for tests and
benchmarks); for the NaN scale of an invalid traced rate it is NaN on the kept
elements and 0 on the dropped ones, as before (plain autodiff of the stored-mask
version gives NaN everywhere). Where the mask is not packed, the compiled
programs (forward, and forward and backward) are, operation for operation,
those of the ``custom_vjp`` that this kernel replaced. Every mode of
differentiation works: ``jax.jvp``, ``jax.linearize``, ``jax.vjp``/``jax.grad``,
``jax.jacfwd``, ``jax.jacrev``, ``jax.hessian``, also through ``jax.jit`` (before
or after the transformation), ``jax.checkpoint``, ``lax.scan``, ``lax.cond`` and
``jax.vmap``. The kernel is not
differentiable with respect to ``scale``, ``shift`` or ``fill`` (their tangents
are ignored: a traced rate gets a zero gradient). Concrete dropout, whose rate
is differentiable, follows the same design (``jaxdrop._concrete_dropout``).

Memory: outside differentiation the random words are materialized on CPU
(faster, a transient ``bits / 8`` bytes per element); under differentiation a
train step needs, for dropout, the packed mask (on CPU) or nothing beyond what
the same step without dropout needs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdrop import _bits, _checks
from jaxdrop._bits import bernoulli_lanes
from jaxdrop._checks import compute_dtype
from jaxdrop._packed_mask import pack_mask, packable, unpack_mask

__all__ = [
    "Mode",
    "check_common",
    "dropout_terms",
    "keep_for",
    "lane_threshold",
    "mask_shape_for",
    "masked_affine",
    "masked_affine_stored",
    "masked_dropout",
    "realized_probability",
    "safe_inverse",
    "seeded_dropout",
    "standard_normal",
]

Mode = Literal["inverted", "classic"]


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


def masked_affine_stored(
    seed, x, threshold, scale, shift=None, fill=None, *, mask_shape, bits, materialize=True
):
  """``where(mask, x * scale + shift, fill)``, differentiated by plain autodiff.

  On XLA:CPU (``materialize``) a :data:`jaxdrop.PHILOX7` mask that :func:`packable` allows is packed and
  unpacked, which hashes each counter once for its four words; the bits are the same.
  """
  whole = lambda: bernoulli_lanes(seed, mask_shape, threshold, bits, materialize=materialize)
  if materialize and _bits._is_key(seed) and packable(mask_shape, bits):
    packed = lambda: unpack_mask(pack_mask(seed, mask_shape, threshold, bits), mask_shape)
    mask = lax.platform_dependent(cpu=packed, default=whole)
  else:
    mask = whole()
  return _select(mask, x, scale, shift, fill)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7))
def _masked_affine(seed, x, threshold, scale, shift, fill, mask_shape, bits):
  return masked_affine_stored(seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits)


@_masked_affine.defjvp
def _masked_affine_jvp(mask_shape, bits, primals, tangents):
  seed, x, threshold, scale, shift, fill = primals
  hashed = lambda: masked_affine_stored(
      seed, x, threshold, scale, shift, fill, mask_shape=mask_shape, bits=bits, materialize=False
  )
  if not packable(mask_shape, bits):
    return hashed(), _masked_tangent(seed, None, threshold, scale, tangents[1], mask_shape, bits)
  # XLA:CPU: the mask packed to one bit per element is the residual (see jaxdrop._packed_mask); elsewhere
  # the seed alone is (the zeros are removed when lowering for one platform).
  size = math.prod(mask_shape) // 8
  packed = lax.platform_dependent(cpu=lambda: pack_mask(seed, mask_shape, threshold, bits),
                                  default=lambda: jnp.zeros((size,), jnp.uint8))
  y = lax.platform_dependent(
      cpu=lambda: _select(unpack_mask(packed, mask_shape), x, scale, shift, fill), default=hashed)
  return y, _masked_tangent(seed, packed, threshold, scale, tangents[1], mask_shape, bits)


@functools.partial(jax.checkpoint, static_argnums=(5, 6), prevent_cse=False,
                   policy=jax.checkpoint_policies.nothing_saveable)
def _masked_tangent(seed, packed, threshold, scale, t, mask_shape, bits):
  """The kernel's tangent, rematerialized: linearization keeps its inputs, never the unpacked mask.

  ``packed`` is ``None`` (the mask is regenerated from ``(seed, threshold)``) or the packed mask, unpacked
  on XLA:CPU and regenerated elsewhere. (``prevent_cse=False``: the compiled programs stay those of the
  ``custom_vjp`` this replaced, which had no barrier either.)
  """
  if packed is None:
    return _masked_linear(seed, threshold, scale, t, mask_shape, bits)
  return lax.platform_dependent(
      cpu=lambda: _packed_linear(packed, scale, t, mask_shape),
      default=lambda: _masked_linear(seed, threshold, scale, t, mask_shape, bits))


def _scaled_where(mask, t, scale):
  """``where(mask, t, 0) * scale``, the linear map of both tangents below."""
  return _affine(jnp.where(jnp.broadcast_to(mask, t.shape), t, jnp.zeros((), t.dtype)), scale, None)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _masked_linear(seed, threshold, scale, t, mask_shape, bits):
  """``where(mask, t, 0) * scale``: linear in ``t``; its transpose is ``where(mask, g * scale, 0)``.

  A ``custom_jvp`` (whose tangent is itself), so that partial evaluation, which stages a ``custom_jvp`` call
  with unknown inputs whole, never splits it, whatever an enclosing ``jax.checkpoint``'s policy saves.
  """
  return _scaled_where(bernoulli_lanes(seed, mask_shape, threshold, bits, materialize=False), t, scale)


@_masked_linear.defjvp
def _masked_linear_jvp(mask_shape, bits, primals, tangents):
  seed, threshold, scale, t = primals
  return (_masked_linear(seed, threshold, scale, t, mask_shape, bits),
          _masked_linear(seed, threshold, scale, tangents[3], mask_shape, bits))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _packed_linear(packed, scale, t, mask_shape):
  """:func:`_masked_linear` with the mask unpacked from ``packed`` (its own tangent, as that one)."""
  return _scaled_where(unpack_mask(packed, mask_shape), t, scale)


@_packed_linear.defjvp
def _packed_linear_jvp(mask_shape, primals, tangents):
  packed, scale, t = primals
  return _packed_linear(packed, scale, t, mask_shape), _packed_linear(packed, scale, tangents[2], mask_shape)


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
  return _masked_affine(seed, x, threshold, scale, shift, fill, mask_shape, bits)


# --- the dropout kernel that the variants share, on checked arguments ---


# Probabilities on the lane grid: the one place where a probability becomes a lane threshold (and a rate a
# threshold, a keep probability and a validity). jaxdrop._bits only compares lanes with a given threshold.


def lane_threshold(prob, bits: int) -> int | jax.Array:
  """The integer threshold ``t`` such that a ``bits``-bit lane is below it with probability ≈ ``prob``.

  Args:
    prob: a Python float, or a traced float scalar, in ``[0, 1]``.
    bits: lane width, 8, 16 or 32.

  Returns:
    ``round(prob * 2**bits)`` as a Python int (concrete ``prob``) or a
    ``uint32`` scalar (traced). For 32-bit lanes it is capped at ``2**32 - 1``
    (a probability 1 then misses by ``2**-32``; callers short-cut ``prob == 1``),
    and a traced probability at ``2**32 - 256`` (float32 holds no larger value
    below ``2**32``; :func:`keep_for` keeps everything at a traced rate 0).
  """
  top = 2**bits if bits < 32 else 2**32 - 1
  if isinstance(prob, (int, float)):
    return min(max(round(prob * 2**bits), 0), top)
  # float32 cannot hold 2**32 - 1; its largest value below 2**32 is 2**32 - 256.
  top_f = float(top) if bits < 32 else 4294967040.0
  scaled = jnp.round(jnp.asarray(prob, jnp.float32) * jnp.float32(2.0**bits))
  return jnp.clip(scaled, 0.0, top_f).astype(jnp.uint32)


def realized_probability(threshold, bits: int) -> float | jax.Array:
  """The exact probability that a ``bits``-bit lane is below ``threshold`` (a Python int or ``uint32``)."""
  if isinstance(threshold, int):
    return threshold / 2**bits
  return threshold.astype(jnp.float32) / jnp.float32(2.0**bits)


class _Keep(NamedTuple):
  threshold: int | jax.Array  # a lane below it keeps its element
  probability: float | jax.Array  # the keep probability scales are computed from
  valid: bool | jax.Array  # False for a traced rate outside [0, 1]


def keep_for(rate, mask_bits: int) -> _Keep:
  """Threshold, keep probability and validity for a checked ``rate`` (float or traced).

  The keep probability is ``1 - rate``, except for 8-bit masks, whose realized
  probability (a multiple of 1/256, :func:`realized_probability`) is used, so
  that expectations stay exact.
  """
  if isinstance(rate, float):
    keep = 1.0 - rate
    threshold = lane_threshold(keep, mask_bits)
    prob = realized_probability(threshold, mask_bits) if mask_bits == 8 else keep
    return _Keep(threshold, prob, True)
  rate = jnp.asarray(rate, jnp.float32)
  valid = (rate >= 0) & (rate <= 1)  # False for NaN too
  keep = 1.0 - rate
  threshold = lane_threshold(keep, mask_bits)
  if mask_bits == 32:
    # lane_threshold caps at 2**32 - 256 in float32; keep everything at rate 0.
    threshold = jnp.where(keep >= 1, jnp.uint32(2**32 - 1), threshold)
  prob = realized_probability(threshold, mask_bits) if mask_bits == 8 else keep
  return _Keep(threshold, prob, valid)


def check_common(x, rate, mode, mask_bits):
  """``(x, rate)`` checked as :func:`jaxdrop.dropout` checks them, with ``mode`` and ``mask_bits``."""
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  _checks.check_mode(mode)
  _checks.check_mask_bits(mask_bits)
  return x, rate


def mask_shape_for(shape, broadcast_dims: Sequence[int] | int) -> tuple[int, ...]:
  """The mask's shape: ``shape`` with 1 on each of ``broadcast_dims``."""
  dims = _checks.check_broadcast_dims(broadcast_dims, len(shape))
  return tuple(1 if axis in dims else size for axis, size in enumerate(shape))


def masked_dropout(key, x, rate, mask_shape, mode, mask_bits, fn):
  """:func:`dropout` on checked arguments with an explicit mask shape (shared by the variants)."""
  if isinstance(rate, float):
    if rate == 0.0:
      return x
    if rate == 1.0:
      return jnp.zeros_like(x)
  seed = _bits.derive_seed(_checks.check_key(key, fn=fn))
  return seeded_dropout(seed, x, rate, mask_shape, mode, mask_bits)


def seeded_dropout(seed, x, rate, mask_shape, mode, mask_bits):
  """:func:`masked_dropout` from the generator's seed instead of a key (no key is consumed)."""
  threshold, scale, fill = dropout_terms(rate, mode, mask_bits)
  return masked_affine(seed, x, threshold, scale, None, fill, mask_shape=mask_shape, bits=mask_bits)


def dropout_terms(rate, mode, mask_bits):
  """The lane threshold, the ``float32`` scale of kept elements and the fill of dropped ones (``None``: 0) of
  dropout at a checked ``rate``: a kept element is ``x * scale``, a dropped one ``fill``; for an invalid
  traced
  rate both are NaN. (The kernels of :func:`seeded_dropout` and of blockwise attention share them.)"""
  keep = keep_for(rate, mask_bits)
  fill = None
  if mode == "classic":
    scale = jnp.float32(1.0)
  elif isinstance(keep.probability, float):
    scale = jnp.float32(1.0 / keep.probability if keep.probability > 0 else 0.0)
  else:
    scale = safe_inverse(keep.probability)
  if not isinstance(keep.valid, bool):
    scale = jnp.where(keep.valid, scale, jnp.nan)
    fill = jnp.where(keep.valid, 0.0, jnp.nan)
  return keep.threshold, scale, fill


def safe_inverse(p: jax.Array) -> jax.Array:
  """``1 / p``, or 0 where ``p == 0`` (with finite gradients)."""
  positive = p > 0
  return jnp.where(positive, 1.0 / jnp.where(positive, p, 1.0), 0.0)


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """``N(0, 1)`` noise of ``shape``, drawn from the Philox stream of ``key`` that the masks use (it partitions
  like them: a sharded draw is bitwise the unsharded one)."""
  return jax.random.normal(_bits.stream_key(_bits.derive_seed(key)), shape, dtype)
