"""What the linen and the NNX layers share, below both faces (neither face imports the other).

Whether a call draws a key (:func:`draws_key`, :func:`needs_key`) and the initializer of concrete dropout's
learned rate (:func:`logit_uniform`). Each face adds its own conventions on top: ``deterministic`` and the
``"dropout"`` rng collection in :mod:`jaxdrop.linen._base`, ``deterministic``, ``rngs`` and ``set_view`` in
:mod:`jaxdrop.nnx._base`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdrop._checks import check_rate

__all__ = ["draws_key", "logit_uniform", "needs_key"]


def needs_key(*rates) -> bool:
  """False when every rate is a concrete 0 or 1 (nothing random to draw).

  Example:
    >>> needs_key(0.0, 1.0), needs_key(0.0, 0.5)
    (False, True)
  """
  return not all(isinstance(r, (int, float)) and r in (0, 1) for r in rates)


def draws_key(deterministic: bool, *rates, random: bool | None = None) -> bool:
  """Whether a layer's call draws a key: it is not ``deterministic`` and has something random to draw.

  Args:
    deterministic: the layer's merged ``deterministic``.
    *rates: the call's drop probabilities, each checked (also when deterministic).
    random: for layers whose noise is not set by a rate, whether it is random (``rates`` then decide nothing).

  Returns:
    ``not deterministic and needs_key(*rates)`` (or ``random`` in place of ``needs_key``).

  Raises:
    ValueError: for a rate outside ``[0, 1]``.

  Example:
    >>> draws_key(False, 0.5), draws_key(True, 0.5), draws_key(False, 0.0), draws_key(False, random=True)
    (True, False, False, True)
  """
  for rate in rates:
    check_rate(rate)
  return not deterministic and (needs_key(*rates) if random is None else random)


def logit_uniform(low: float, high: float) -> Callable[..., jax.Array]:
  """An initializer of concrete dropout's ``p_logit``: the logit of a rate drawn uniformly from
  ``[low, high]`` (the reference code's ``init_min``, ``init_max``).

  Raises:
    ValueError: unless ``0 < low <= high < 1``.
  """
  if not 0 < low <= high < 1:
    raise ValueError(f"init_rate must be (low, high) with 0 < low <= high < 1, got {(low, high)}.")

  def init(key, shape, dtype=jnp.float32):
    lo, hi = jnp.log(low) - jnp.log1p(-low), jnp.log(high) - jnp.log1p(-high)
    return jax.random.uniform(key, shape, dtype, lo, hi) if high > low else jnp.full(shape, lo, dtype)

  return init
