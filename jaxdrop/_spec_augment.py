"""SpecAugment's time and frequency masks (Park et al., 2019) with torchaudio's semantics.

torchaudio's ``mask_along_axis`` and ``mask_along_axis_iid`` (``torchaudio.functional``), which its
``FrequencyMasking`` and ``TimeMasking`` transforms call: for each mask, two uniform draws ``u, v`` in
``[0, 1)``, then

* ``width = u * mask_param`` and ``start = v * (size - width)`` (``size``: the masked axis' length);
* the columns ``[trunc(start), trunc(start) + trunc(width))`` of that axis are set to ``mask_value``;
* with ``p < 1`` (``TimeMasking``'s maximum proportion), ``mask_param`` becomes
  ``min(mask_param, int(size * p))`` first; a ``mask_param`` below 1 masks nothing.

``iid=False`` draws one mask for the whole input; ``iid=True`` one per index of the leading axes (each
example and channel of ``(batch, channel, freq, time)``). The draws come from jaxdrop's generator:
the key is consumed once for the seed, and ``(u, v)`` are ``jax.random.uniform`` of shape
``(2, *leading)`` (``(2,)`` without ``iid``) on that seed's Philox stream, in float32
(:func:`spec_mask_uniforms`), whatever the input's dtype. Differentiation keeps the per-mask starts and
ends, not the mask.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _bits, _checks

__all__ = ["frequency_mask", "mask_along_axis", "spec_mask_uniforms", "time_mask"]


def spec_mask_uniforms(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The float32 uniforms ``(u, v)`` of :func:`mask_along_axis`, shape ``(2, *shape)``: ``u`` scales the
  width, ``v`` the start."""
  seed = _bits.derive_seed(key)
  return jax.random.uniform(_bits.stream_key(seed), (2, *shape), jnp.float32)


def effective_mask_param(mask_param: int, p: float, size: int) -> int:
  """torchaudio's ``_get_mask_param``: ``mask_param`` if ``p == 1``, else ``min(mask_param, int(size*p))``."""
  return mask_param if p == 1.0 else min(mask_param, int(size * p))


def check_mask_param(mask_param) -> int:
  if isinstance(mask_param, bool) or not isinstance(mask_param, numbers.Integral) or mask_param < 0:
    raise ValueError(f"mask_param must be an int >= 0 (the longest mask, in columns), got"
                     f" mask_param={mask_param!r}.")
  return int(mask_param)


def check_p(p) -> float:
  if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
    raise ValueError(f"p must be a number in [0, 1] (the largest fraction of the axis one mask may cover),"
                     f" got p={p!r}.")
  return float(p)


def _check_axis(axis, ndim: int, iid: bool) -> int:
  least = 3 if iid else 2
  if ndim < least:
    what = "iid masks need (..., freq, time) with at least one leading axis" if iid else (
        "masks need (..., freq, time)")
    raise ValueError(f"{what}: the input must have at least {least} dimensions, got {ndim}.")
  if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis not in (ndim - 2, ndim - 1,
                                                                                      -2, -1):
    raise ValueError(f"axis must be one of the last two axes (frequency {ndim - 2} or -2, time {ndim - 1} or"
                     f" -1), got axis={axis!r}.")
  return int(axis) % ndim


def _bounds(uniforms, mask_param: int, size: int):
  """torchaudio's ``mask_start`` and ``mask_end`` (``int32``) from the draws ``(u, v)``."""
  width = uniforms[0] * jnp.float32(mask_param)
  start = uniforms[1] * (jnp.float32(size) - width)
  first = jnp.trunc(start).astype(jnp.int32)  # torch's .long() truncates toward zero (start may be < 0)
  return first, first + jnp.trunc(width).astype(jnp.int32)


@functools.partial(jax.checkpoint, static_argnums=(4,))
def _fill_between(x, first, end, mask_value, axis: int):
  """``x`` with the columns ``[first, end)`` of ``axis`` (per leading index) set to ``mask_value``;
  rematerialized, so that the backward pass keeps the bounds, not the mask."""
  lead = x.ndim - 2
  bound_shape = first.shape + (1,) * (x.ndim - first.ndim)
  column = lax.broadcasted_iota(jnp.int32, (1,) * lead + tuple(x.shape[lead:]), axis)
  masked = (column >= first.reshape(bound_shape)) & (column < end.reshape(bound_shape))
  return jnp.where(masked, mask_value.astype(x.dtype), x)


def mask_along_axis(
    key: jax.Array | None,
    specgram: jax.Array,
    mask_param: int,
    axis: int,
    *,
    mask_value: float | jax.Array = 0.0,
    p: float = 1.0,
    iid: bool = False,
) -> jax.Array:
  """Masks a random band of ``axis`` (one of the last two) of ``(..., freq, time)`` spectrograms.

  torchaudio's ``mask_along_axis`` (``iid=False``: one band for the whole
  input) and ``mask_along_axis_iid`` (``iid=True``: one band per index of the
  leading axes, e.g. per example and channel of ``(batch, channel, freq,
  time)``), exactly, given the draws of the module's docstring: the band is
  ``[trunc(v * (size - w)), trunc(v * (size - w)) + trunc(w))`` with
  ``w = u * mask_param`` (after ``p``), set to ``mask_value``. Evaluation is the
  identity (do not call it).

  Args:
    key: a PRNG key; may be ``None`` only when the (effective) ``mask_param``
      is 0.
    specgram: a floating-point array ``(..., freq, time)``, at least 2-D (3-D
      with ``iid``).
    mask_param: the longest band, in columns (an int >= 0); its width is
      uniform in ``[0, mask_param)``.
    axis: the masked axis, ``-2`` (frequency) or ``-1`` (time), or their
      non-negative numbers.
    mask_value: the value of the masked columns, a scalar (it may be traced and
      is differentiable, e.g. the input's mean as torchaudio's ``SpecAugment``).
    p: the largest fraction of the axis a band may cover, in ``[0, 1]``.
    iid: one band per leading index instead of one for the input.

  Returns:
    An array like ``specgram``.

  Raises:
    ValueError: for a bad ``mask_param``, ``p`` or ``axis``, too few
      dimensions, a non-scalar ``mask_value``, or a missing key.
    TypeError: if ``specgram`` is not floating.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> spec = jnp.ones((2, 1, 8, 20))                        # (batch, channel, freq, time)
    >>> y = jaxdrop.mask_along_axis(jax.random.key(0), spec, 10, -1, iid=True)
    >>> masked = (y == 0).all(axis=2)                         # whole time columns
    >>> bool(((y == 0) == masked[:, :, None, :]).all()), masked.shape
    (True, (2, 1, 20))
  """
  specgram = _checks.check_floating(specgram, name="specgram")
  if not isinstance(iid, bool):
    raise TypeError(f"iid must be True or False, got iid={iid!r}.")
  mask_param, p = check_mask_param(mask_param), check_p(p)
  axis = _check_axis(axis, specgram.ndim, iid)
  if jnp.ndim(mask_value) != 0:
    raise ValueError(f"mask_value must be a scalar, got an array of shape {jnp.shape(mask_value)}.")
  value = jnp.asarray(mask_value)
  if not jnp.issubdtype(value.dtype, jnp.floating):
    value = value.astype(jnp.float32)
  size = specgram.shape[axis]
  mask_param = effective_mask_param(mask_param, p, size)
  if mask_param < 1:
    return specgram
  key = _checks.check_key(key, fn="jaxdrop.mask_along_axis")
  uniforms = spec_mask_uniforms(key, specgram.shape[:-2] if iid else ())
  first, end = _bounds(uniforms, mask_param, size)
  return _fill_between(specgram, first, end, value, axis)


def frequency_mask(
    key: jax.Array | None,
    specgram: jax.Array,
    mask_param: int,
    *,
    iid_masks: bool = False,
    mask_value: float | jax.Array = 0.0,
) -> jax.Array:
  """torchaudio's ``FrequencyMasking(freq_mask_param=mask_param, iid_masks)``: a random band of frequencies
  (axis ``-2`` of ``(..., freq, time)``), :func:`mask_along_axis` on it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.frequency_mask(jax.random.key(0), jnp.ones((8, 20)), 4)
    >>> int((y == 0).all(axis=1).sum()) < 4                   # fewer than mask_param rows
    True
  """
  return mask_along_axis(key, specgram, mask_param, -2, mask_value=mask_value, iid=iid_masks)


def time_mask(
    key: jax.Array | None,
    specgram: jax.Array,
    mask_param: int,
    *,
    iid_masks: bool = False,
    p: float = 1.0,
    mask_value: float | jax.Array = 0.0,
) -> jax.Array:
  """torchaudio's ``TimeMasking(time_mask_param=mask_param, iid_masks, p)``: a random band of time steps
  (axis ``-1`` of ``(..., freq, time)``), :func:`mask_along_axis` on it; ``p`` caps a band at that fraction of
  the steps.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.time_mask(jax.random.key(0), jnp.ones((8, 20)), 15, p=0.2)
    >>> int((y == 0).all(axis=0).sum()) < 4                   # p caps the band at int(20 * 0.2) = 4
    True
  """
  return mask_along_axis(key, specgram, mask_param, -1, mask_value=mask_value, p=p, iid=iid_masks)
