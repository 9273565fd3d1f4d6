"""DropConnect: dropout on weights instead of activations (Wan et al., 2013)."""

from __future__ import annotations

import jax

from jaxdrop._masked import Mode, check_common, masked_dropout

__all__ = ["drop_connect"]


def drop_connect(
    key: jax.Array | None,
    weights: jax.Array,
    rate: float | jax.Array,
    *,
    mode: Mode = "inverted",
    mask_bits: int = 16,
) -> jax.Array:
  """Randomly zeroes individual weights (connections) with probability ``rate``.

  ``rate`` is the drop probability (not the keep probability). One mask is
  drawn for the whole weight array and shared by every example of the batch
  that the layer sees in this step (as in AWD-LSTM's weight drop); survivors
  are scaled by ``1 / (1 - rate)`` in the default inverted mode, so evaluation
  uses the weights as they are (``mode="classic"``: scale by ``1 - rate`` at
  evaluation with :func:`jaxdrop.dropout_eval`). Precision and ``mask_bits`` are
  those of :func:`jaxdrop.dropout`.

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    weights: a floating-point weight array (e.g. a ``Dense`` kernel).
    rate: drop probability in ``[0, 1]``.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: 16 (default), 8 or 32.

  Returns:
    The dropped (and scaled) weights, same shape and dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> kernel = jnp.ones((3, 2))
    >>> x = jnp.ones((5, 3))
    >>> y = x @ jaxdrop.drop_connect(jax.random.key(0), kernel, 0.5)
    >>> y.shape
    (5, 2)
  """
  weights, rate = check_common(weights, rate, mode, mask_bits)
  return masked_dropout(key, weights, rate, weights.shape, mode, mask_bits, "jaxdrop.drop_connect")
