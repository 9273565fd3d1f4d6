"""Drop-path (stochastic depth): drop a whole example's residual branch."""

from __future__ import annotations

import jax

from jaxdrop._masked import Mode, check_common, masked_dropout

__all__ = ["drop_path"]


def drop_path(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    batch_axis: int = 0,
    mode: Mode = "inverted",
    mask_bits: int = 16,
    scale_by_keep: bool = True,
) -> jax.Array:
  """Zeroes the whole of each example with probability ``rate`` (Huang et al., 2016).

  Apply it to the output of a residual branch, ``x + drop_path(key, f(x), rate)``:
  one Bernoulli draw per example decides whether the branch is skipped.
  ``rate`` is the drop probability (not the survival probability). In the
  default inverted mode survivors are scaled by ``1 / (1 - rate)`` (as in timm);
  the original paper's ``mode="classic"`` scales by ``1 - rate`` at evaluation
  instead (:func:`jaxdrop.dropout_eval`).

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    x: a floating-point array with a batch axis.
    rate: drop probability in ``[0, 1]``.
    batch_axis: the axis that indexes examples.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: 16 (default), 8 or 32.
    scale_by_keep: ``False`` leaves the surviving examples unscaled while
      training (timm's ``drop_path(..., scale_by_keep=False)``); evaluation
      stays the identity in the inverted mode.

  Returns:
    An array like ``x`` in which each example is either zero or scaled.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> y = jaxdrop.drop_path(jax.random.key(0), jnp.ones((4, 3)), 0.5)
    >>> [bool((row == row[0]).all()) for row in y]
    [True, True, True, True]
  """
  x, rate = check_common(x, rate, mode, mask_bits)
  if not isinstance(scale_by_keep, bool):
    raise TypeError(f"scale_by_keep must be True or False, got {scale_by_keep!r}.")
  if x.ndim == 0:
    raise ValueError("drop_path needs an input with a batch axis, got a scalar.")
  if not -x.ndim <= batch_axis < x.ndim:
    raise ValueError(
        f"batch_axis={batch_axis} is out of range for an input with {x.ndim} dimension(s)."
    )
  axis = batch_axis % x.ndim
  mask_shape = tuple(size if i == axis else 1 for i, size in enumerate(x.shape))
  unscaled = "classic" if not scale_by_keep else mode  # the classic mode's training step does not scale
  return masked_dropout(key, x, rate, mask_shape, unscaled, mask_bits, "jaxdrop.drop_path")
