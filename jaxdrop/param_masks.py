"""Which parameters a penalty, weight decay or max-norm constraint applies to.

A *mask* is one of:

* ``None``: the default, :func:`weights_only` (weight matrices and
  convolution kernels, i.e. leaves with two or more dimensions; biases,
  normalization scales and scalars are left alone);
* a predicate ``(path, leaf) -> bool`` on each leaf and its key path, as given
  by ``jax.tree_util.tree_map_with_path`` (e.g. :func:`all_params`);
* a pytree of Python bools with the structure of the parameters, or a prefix
  of it (as ``optax.masked`` takes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Mask", "all_params", "resolve_mask", "weights_only"]

Mask = None | Callable[[Any, Any], bool] | Any


def weights_only(path, leaf) -> bool:
  """Default predicate: ``True`` for weight matrices and conv kernels (``ndim >= 2``).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> jaxdrop.weights_only((), jnp.zeros((3, 4))), jaxdrop.weights_only((), jnp.zeros(4))
    (True, False)
  """
  del path
  return jnp.ndim(leaf) >= 2


def all_params(path, leaf) -> bool:
  """Predicate that selects every leaf, biases included (what seed 004's loop does)."""
  del path, leaf
  return True


def resolve_mask(params: Any, mask: Mask = None) -> Any:
  """Turns any accepted ``mask`` into a pytree of bools shaped like ``params``.

  Args:
    params: a pytree of arrays (Flax linen variables, an NNX ``State``, ...).
    mask: ``None``, a predicate ``(path, leaf) -> bool`` or a pytree of bools.

  Returns:
    A pytree with the structure of ``params`` and a Python bool at every leaf.

  Raises:
    ValueError: if a pytree ``mask`` does not match the structure of ``params``.
    TypeError: if a predicate returns something other than a bool.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> jaxdrop.resolve_mask({"bias": jnp.zeros(2), "kernel": jnp.zeros((3, 2))})
    {'bias': False, 'kernel': True}
  """
  if mask is None:
    mask = weights_only
  if callable(mask):

    def decide(path, leaf):
      flag = mask(path, leaf)
      if not isinstance(flag, (bool, jnp.bool_)) and not (
          hasattr(flag, "dtype") and getattr(flag, "shape", None) == () and flag.dtype == bool
      ):
        raise TypeError(f"a mask predicate must return a bool, got {flag!r} at {jax.tree_util.keystr(path)}.")
      return bool(flag)

    return jax.tree_util.tree_map_with_path(decide, params)
  try:
    return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub), mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "mask must be None, a predicate (path, leaf) -> bool, or a pytree of bools with"
        f" the structure of params (or a prefix of it): {e}"
    ) from None


def optax_mask(mask: Mask = None) -> Callable[[Any], Any]:
  """``mask`` as the callable ``params -> pytree of bools`` that ``optax.masked`` takes."""
  return lambda params: resolve_mask(params, mask)
