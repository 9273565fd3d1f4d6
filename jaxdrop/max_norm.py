"""Max-norm constraint: keep each unit's incoming weight vector within an L2 ball."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdrop.param_masks import Mask, resolve_mask

__all__ = ["max_norm", "max_norm_projection"]


def _check_max_value(max_value):
  if isinstance(max_value, (int, float)) and not max_value > 0:
    raise ValueError(f"max_value must be > 0, got max_value={max_value!r}.")


def _project(w: jax.Array, max_value, axis) -> jax.Array:
  axes = tuple(range(w.ndim - 1)) if axis is None else axis
  norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
  over = norms > max_value
  # Leave vectors inside the ball bitwise unchanged (factor exactly 1).
  factor = jnp.where(over, max_value / jnp.where(over, norms, 1), 1)
  return (w * factor.astype(w.dtype)).astype(w.dtype)


def max_norm_projection(
    params: Any,
    max_value: float = 3.0,
    *,
    axis: int | Sequence[int] | None = None,
    mask: Mask = None,
) -> Any:
  """Rescales every weight vector whose L2 norm exceeds ``max_value`` onto the ball.

  A unit's incoming weight vector is a slice along all axes but the last for
  Flax kernels (``(in, out)`` and ``(h, w, in, out)``), as Keras'
  ``MaxNorm(axis=0)`` for dense and ``axis=[0, 1, 2]`` for conv kernels.
  Vectors inside the ball are left bitwise unchanged.

  Args:
    params: a parameter pytree.
    max_value: the radius ``c`` (Srivastava et al. used 3 to 4).
    axis: axes that span one vector; default all but the last.
    mask: which leaves to constrain (default :func:`jaxdrop.weights_only`).

  Returns:
    The projected parameters.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> kernel = jnp.array([[3.0, 0.3], [4.0, 0.4]])
    >>> jaxdrop.max_norm_projection({"kernel": kernel}, 1.0)["kernel"]
    Array([[0.6, 0.3],
           [0.8, 0.4]], dtype=float32)
  """
  _check_max_value(max_value)
  flags = resolve_mask(params, mask)
  return jax.tree.map(lambda flag, w: _project(w, max_value, axis) if flag else w, flags, params)


def max_norm(
    max_value: float = 3.0,
    *,
    axis: int | Sequence[int] | None = None,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """A transform that projects the parameters after each update (place it last).

  ``chain(optimizer, max_norm(c))`` changes the updates of the selected leaves
  so that ``optax.apply_updates(params, updates)`` equals
  :func:`max_norm_projection` of the unconstrained new parameters, up to one
  rounding of ``params + (projected - params)``; other leaves' updates pass
  through untouched. This is the constraint seed 004 recommends with dropout
  (large learning rate, momentum, and max-norm).

  Args:
    max_value: the radius ``c``.
    axis: axes that span one vector; default all but the last.
    mask: which leaves to constrain (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation`` that needs ``params`` in ``update``.

  Example:
    >>> import optax
    >>> import jaxdrop
    >>> tx = optax.chain(jaxdrop.sgd(0.1, momentum=0.9), jaxdrop.max_norm(3.0))
  """
  _check_max_value(max_value)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("max_norm needs the current parameters: call tx.update(updates, state, params).")
    flags = resolve_mask(params, mask)

    def constrain(flag, u, p):
      if not flag:
        return u
      return _project(p + u, max_value, axis) - p

    return jax.tree.map(constrain, flags, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)
