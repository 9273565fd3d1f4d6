"""Dropout as a pure function of an explicit PRNG key."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdrop import _checks
from jaxdrop._masked import Mode, check_common, keep_for, mask_shape_for, masked_dropout

__all__ = ["Mode", "dropout", "dropout_eval", "keep_probability"]


def keep_probability(rate, *, mask_bits: int = 16):
  """The keep probability that scales survivors, for a given ``rate`` and mask precision.

  With 16- or 32-bit masks it is ``1 - rate``. With 8-bit masks the realized
  keep probability is a multiple of 1/256, ``round((1 - rate) * 256) / 256``,
  and that value is used instead, so that expectations stay exact.

  Args:
    rate: drop probability (not the keep probability), in ``[0, 1]``.
    mask_bits: 8, 16 or 32.

  Returns:
    A float (or a traced scalar for a traced ``rate``: NaN when that rate is
    outside ``[0, 1]``).

  Example:
    >>> import jaxdrop
    >>> jaxdrop.keep_probability(0.3), jaxdrop.keep_probability(0.3, mask_bits=8)
    (0.7, 0.69921875)
  """
  rate = _checks.check_rate(rate)
  keep = keep_for(rate, _checks.check_mask_bits(mask_bits))
  if isinstance(keep.valid, bool):
    return keep.probability
  return jnp.where(keep.valid, keep.probability, jnp.nan)


def dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    broadcast_dims: Sequence[int] = (),
    mode: Mode = "inverted",
    mask_bits: int = 16,
) -> jax.Array:
  """Randomly zeroes elements of ``x`` with probability ``rate``.

  ``rate`` is the drop probability (not the keep probability), as in
  ``flax.linen.Dropout`` and ``torch.nn.Dropout``.

  * ``mode="inverted"`` (default): survivors are multiplied by
    ``1 / (1 - rate)`` so that ``E[dropout(x)] == x``; evaluation is the
    identity.
  * ``mode="classic"``: survivors are kept as they are, and evaluation
    multiplies by the keep probability instead (:func:`dropout_eval`).

  The mask is applied with ``jnp.where``, so an ``inf`` or ``NaN`` in a dropped
  element does not leak. Dropped elements get a zero gradient and survivors'
  gradients are multiplied by the same scale. The backward pass regenerates the
  mask from the key instead of storing it. Forward mode (``jax.jvp``,
  ``jax.linearize``, ``jax.jacfwd``, ``jax.hessian``) works as well, also through
  ``jit``, ``checkpoint``, ``scan`` and ``cond``, and so does ``jax.export`` with a
  symbolic batch dimension.

  Precision: with the default 16-bit mask the realized drop probability is
  ``1 - round((1 - rate) * 2**16) / 2**16``, within ``2**-17`` of ``rate``, and
  survivors are scaled by exactly ``1 / (1 - rate)``. ``mask_bits=8`` is faster;
  its keep probability is a multiple of 1/256 and survivors are scaled by its
  inverse (see :func:`keep_probability`), so the expectation stays exact.
  ``mask_bits=32`` draws one 32-bit word per element.

  Args:
    key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``);
      may be ``None`` only when ``rate`` is 0 or 1.
    x: a floating-point array; its dtype is preserved.
    rate: drop probability in ``[0, 1]``. A Python float is checked at once;
      a traced scalar (e.g. under ``vmap`` over rates) cannot be, and an
      invalid one yields NaN outputs. Not differentiable.
    broadcast_dims: axes along which one mask value is shared: e.g. ``(1, 2)``
      on NHWC maps drops whole channels (spatial dropout), ``(1,)`` on
      ``(batch, time, features)`` keeps the mask fixed over time.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: 16 (default), 8 or 32 random bits per mask decision.

  Returns:
    An array with the shape and dtype of ``x``. ``rate == 0`` returns ``x``
    itself and ``rate == 1`` returns zeros (with zero, finite gradients).

  Raises:
    ValueError: for a rate outside ``[0, 1]`` or NaN, an unknown ``mode`` or
      ``mask_bits``, out-of-range ``broadcast_dims``, or a missing key.
    TypeError: if ``x`` is not floating or ``key`` is not a PRNG key.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> x = jnp.ones((2, 4))
    >>> y = jaxdrop.dropout(jax.random.key(0), x, 0.5)
    >>> bool(jnp.all((y == 0) | (y == 2)))
    True
  """
  x, rate = check_common(x, rate, mode, mask_bits)
  mask_shape = mask_shape_for(x.shape, broadcast_dims)
  return masked_dropout(key, x, rate, mask_shape, mode, mask_bits, "jaxdrop.dropout")


def dropout_eval(
    x: jax.Array,
    rate: float | jax.Array,
    *,
    mode: Mode = "inverted",
    mask_bits: int = 16,
) -> jax.Array:
  """The evaluation-time counterpart of :func:`dropout`.

  Inverted dropout is the identity at evaluation. Classic dropout multiplies by
  the keep probability, ``1 - rate`` (for 8-bit masks the realized keep
  probability, see :func:`keep_probability`), so that the evaluation output
  equals the training output in expectation.

  Args:
    x: a floating-point array; its dtype is preserved.
    rate: drop probability in ``[0, 1]`` (not the keep probability).
    mode: ``"inverted"`` or ``"classic"``, as used in training.
    mask_bits: the mask precision used in training.

  Returns:
    ``x`` (inverted) or ``x * keep_probability`` (classic); NaN for a traced
    ``rate`` outside ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> jaxdrop.dropout_eval(jnp.ones(3), 0.25, mode="classic")
    Array([0.75, 0.75, 0.75], dtype=float32)
  """
  x, rate = check_common(x, rate, mode, mask_bits)
  keep = keep_for(rate, mask_bits)
  if mode == "inverted":  # the identity, or NaN for an invalid traced rate
    return x if isinstance(keep.valid, bool) else jnp.where(keep.valid, x, jnp.nan).astype(x.dtype)
  compute_dtype = _checks.compute_dtype(x.dtype)
  prob = jnp.asarray(keep.probability, compute_dtype)
  if not isinstance(keep.valid, bool):
    prob = jnp.where(keep.valid, prob, jnp.nan)
  return (x.astype(compute_dtype) * prob).astype(x.dtype)
