"""DropBlock: drop contiguous square regions of NHWC feature maps (Ghiasi et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _bits, _checks
from jaxdrop._masked import lane_threshold, safe_inverse

__all__ = ["drop_block", "drop_block_seed_probability"]

_SHAREABLE = (0, 3)  # the batch and channel axes of NHWC


def drop_block_seed_probability(rate, height: int, width: int, block_size: int):
  """The probability ``gamma`` with which each valid block centre is drawn.

  ``gamma = rate * H * W / (b**2 * (H - b + 1) * (W - b + 1))``, capped at 1,
  with ``b = min(block_size, H, W)``: the expected number of dropped units is
  ``rate * H * W`` if blocks did not overlap (the paper's equation 1).
  """
  b = min(block_size, height, width)
  factor = height * width / (b * b * (height - b + 1) * (width - b + 1))
  if isinstance(rate, float):
    return min(rate * factor, 1.0)
  return jnp.minimum(rate * factor, 1.0)


def drop_block(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    block_size: int = 7,
    broadcast_dims: Sequence[int] = (),
    mask_bits: int = 16,
    with_noise: bool = False,
) -> jax.Array:
  """Zeroes random ``block_size x block_size`` squares of NHWC feature maps.

  Block centres are drawn independently with probability
  :func:`drop_block_seed_probability` among the positions where a whole block
  fits; every unit within a dropped block is zeroed, and the kept units are
  scaled by ``mask.size / mask.sum()`` (the paper's normalization, so the
  average activation is preserved). ``rate`` is the target fraction of dropped
  units (the drop probability, not the keep probability); overlapping blocks
  make the realized fraction somewhat lower. ``block_size`` is clipped to the
  map size; ``block_size=1`` is ordinary dropout with that normalization.
  Evaluation is the identity.

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    x: a floating-point array of shape ``(batch, height, width, channels)``.
    rate: drop probability in ``[0, 1]``.
    block_size: the side of the dropped squares.
    broadcast_dims: share the mask across the batch (``0``) and/or channel
      (``3``) axes; by default every map of every example has its own.
    mask_bits: random bits per block-centre decision, 16 (default), 8 or 32.
    with_noise: fill the dropped units with standard normal noise instead of
      zeros, and leave the kept units unscaled (timm's ``DropBlock2d(...,
      with_noise=True)``); the noise is drawn from ``fold_in(key, 1)`` and
      shared across ``broadcast_dims`` as the mask is.

  Returns:
    An array like ``x``.

  Raises:
    ValueError: if ``x`` is not 4-D, ``block_size < 1``, or ``broadcast_dims``
      names a spatial axis.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.drop_block(jax.random.key(0), jnp.ones((2, 16, 16, 8)), 0.1, block_size=3)
    >>> y.shape
    (2, 16, 16, 8)
  """
  x = _checks.check_floating(x)
  rate = _checks.check_rate(rate)
  _checks.check_mask_bits(mask_bits)
  if x.ndim != 4:
    raise ValueError(f"drop_block expects an NHWC array (4 dimensions), got shape {x.shape}.")
  if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
  dims = _checks.check_broadcast_dims(broadcast_dims, 4)
  if not set(dims) <= set(_SHAREABLE):
    raise ValueError(
        f"drop_block can share its mask only across the batch (0) and channel (3)"
        f" axes, got broadcast_dims={tuple(broadcast_dims)!r}."
    )
  if not isinstance(with_noise, bool):
    raise TypeError(f"with_noise must be True or False, got {with_noise!r}.")
  if isinstance(rate, float):
    if rate == 0.0:
      return x
    if rate == 1.0 and not with_noise:
      return jnp.zeros_like(x)
  key = _checks.check_key(key, fn="jaxdrop.drop_block")
  if x.size == 0:  # an empty map (0 x 0, or no channels): nothing to drop
    return x

  n, height, width, c = x.shape
  b = min(block_size, height, width)
  centres = (
      1 if 0 in dims else n, height - b + 1, width - b + 1, 1 if 3 in dims else c,
  )
  gamma = drop_block_seed_probability(rate, height, width, block_size)
  threshold = lane_threshold(gamma, mask_bits)
  seeds = _bits.bernoulli_lanes(_bits.derive_seed(key), centres, threshold, mask_bits)
  # A centre at (i, j) of the valid grid drops rows i..i+b-1 and columns
  # j..j+b-1: a max over a b x b window with "full" padding.
  pad = ((0, 0), (b - 1, b - 1), (b - 1, b - 1), (0, 0))
  dropped = lax.reduce_window(
      seeds.astype(jnp.uint8), jnp.uint8(0), lax.max, (1, b, b, 1), (1, 1, 1, 1), pad
  )
  keep = dropped == 0
  if with_noise:  # timm's normal noise in the dropped blocks, the kept units as they are
    if isinstance(rate, float) and rate == 1.0:
      keep = jnp.zeros_like(keep)  # everything dropped, as rate 1.0 gives zeros without noise
    noise_shape = (centres[0], height, width, centres[3])  # shared across broadcast_dims as the mask is
    noise = jax.random.normal(jax.random.fold_in(key, 1), noise_shape, x.dtype)
    if not isinstance(rate, float):
      noise = jnp.where((rate >= 0) & (rate <= 1), noise, jnp.nan).astype(x.dtype)
    return jnp.where(jnp.broadcast_to(keep, x.shape), x, jnp.broadcast_to(noise, x.shape))
  compute_dtype = _checks.compute_dtype(x.dtype)
  scale = safe_inverse(jnp.mean(keep, dtype=compute_dtype))
  fill = jnp.zeros((), x.dtype)
  if not isinstance(rate, float):
    valid = (rate >= 0) & (rate <= 1)
    scale, fill = jnp.where(valid, scale, jnp.nan), jnp.where(valid, fill, jnp.nan).astype(x.dtype)
  kept = (x.astype(compute_dtype) * scale).astype(x.dtype)
  return jnp.where(jnp.broadcast_to(keep, x.shape), kept, fill)
