"""Max-norm constraint: keep each unit's incoming weight vector within an L2 ball."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdrop._checks import check_scalar
from jaxdrop._param_masks import Mask, param_names, resolve_mask

__all__ = ["fan_in_axes", "max_norm", "max_norm_projection"]


def _check_max_value(max_value):
  value = check_scalar(max_value, name="max_value", meaning="the radius of the L2 ball of each weight vector")
  if value is not None and not value > 0:  # also refuses NaN; inf is no constraint
    raise ValueError(f"max_value must be > 0, got max_value={max_value!r}.")


def fan_in_axes(shape: Sequence[int], bias_shape: Sequence[int] | None = None) -> tuple[int, ...]:
  """The axes of a kernel that span one unit's incoming weights, given its layer's bias.

  Without a bias, all axes but the last (Flax's ``(in, out)`` and
  ``(h, w, in, out)``). With one, the bias tells the layout: its trailing axes
  are the kernel's unit axes and its leading axes, when the kernel starts with
  the same sizes, are stacked layers (``nn.scan``, ``nnx.vmap``), which are
  never summed over: a stacked ``(layers, in, out)`` kernel with its
  ``(layers, out)`` bias gives ``(1,)``, one norm per unit per layer; the query
  kernel ``(features, heads, head_dim)`` of multi-head attention with its
  ``(heads, head_dim)`` bias gives ``(0,)``, one norm per head and unit.

  Example:
    >>> import jaxdrop
    >>> jaxdrop.fan_in_axes((4, 16, 8), (4, 8)), jaxdrop.fan_in_axes((32, 4, 8), (4, 8))
    ((1,), (0,))
    >>> jaxdrop.fan_in_axes((3, 3, 16, 8), (8,))
    (0, 1, 2)
  """
  shape, ndim = tuple(shape), len(shape)
  bias = tuple(bias_shape or ())
  for stacked in range(len(bias) - 1, -1, -1):  # the most stacked reading first
    units = len(bias) - stacked
    fan_in = ndim - units - stacked
    if fan_in >= 1 and shape[:stacked] == bias[:stacked] and shape[ndim - units:] == bias[stacked:]:
      return tuple(range(stacked, stacked + fan_in))
  return tuple(range(ndim - 1))


def _bias_shapes(params: Any) -> dict[tuple, tuple[int, ...]]:
  """``{parent path: bias shape}`` of every leaf named ``bias`` (linen dicts and NNX states alike)."""
  found = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = param_names(path)
    if names and names[-1] == "bias":
      found[names[:-1]] = np.shape(leaf)
  return found


def _project_tree(params: Any, flags: Any, max_value, axis, new_values: Any) -> Any:
  """Each selected leaf of ``new_values`` projected along its fan-in axes (``axis`` when given)."""
  biases = _bias_shapes(params) if axis is None else {}

  def project(path, flag, w):
    if not flag:
      return w
    names = param_names(path)
    axes = axis if axis is not None else fan_in_axes(np.shape(w), biases.get(names[:-1]))
    return _project(w, max_value, axes)

  return jax.tree_util.tree_map_with_path(project, flags, new_values)


def _project(w: jax.Array, max_value, axis) -> jax.Array:
  if jnp.issubdtype(w.dtype, jnp.complexfloating):
    squares = jnp.square(w.real) + jnp.square(w.imag)  # |w|^2, real
  else:
    squares = jnp.square(w)
  sums = jnp.sum(squares, axis=axis, keepdims=True)
  # The double where: an all-zero vector takes the square root of 1, not of 0, whose derivative is infinite
  # (0 * inf would make its gradient NaN); it is inside the ball anyway, where the projection is the identity.
  nonzero = sums > 0
  norms = jnp.sqrt(jnp.where(nonzero, sums, 1))
  over = nonzero & (norms > max_value)
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

  A unit's incoming weight vector spans the kernel's fan-in axes
  (:func:`fan_in_axes`): all axes but the last for Flax kernels
  (``(in, out)`` and ``(h, w, in, out)``, as Keras' ``MaxNorm(axis=0)`` for
  dense and ``axis=[0, 1, 2]`` for conv kernels), read from the layer's bias
  where it has one, so that layers stacked by ``nn.scan``/``nnx.vmap`` get
  one norm per unit per layer and attention's ``(features, heads, head_dim)``
  kernels one per head and unit. A stacked kernel without a bias cannot be
  told from an unstacked one: pass ``axis`` for it. Vectors inside the ball
  are left bitwise unchanged, and the projection's gradient there is the
  identity, all-zero vectors included (finite, not NaN). Complex kernels are
  measured by ``|w|``.

  Args:
    params: a parameter pytree.
    max_value: the radius ``c`` (Srivastava et al. used 3 to 4).
    axis: axes that span one vector, for every selected leaf; default
      :func:`fan_in_axes` of each.
    mask: which leaves to constrain (default :func:`jaxdrop.weights_only`).

  Returns:
    The projected parameters.

  Raises:
    TypeError: if ``max_value`` is not a real number (a bool, a string, ``None``).
    ValueError: if ``max_value`` is not > 0 (NaN included) or not a scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> kernel = jnp.array([[3.0, 0.3], [4.0, 0.4]])
    >>> jaxdrop.max_norm_projection({"kernel": kernel}, 1.0)["kernel"]
    Array([[0.6, 0.3],
           [0.8, 0.4]], dtype=float32)
  """
  _check_max_value(max_value)
  return _project_tree(params, resolve_mask(params, mask), max_value, axis, params)


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
  through untouched. This is the constraint Srivastava et al. recommend with dropout
  (large learning rate, momentum, and max-norm).

  Args:
    max_value: the radius ``c``.
    axis: axes that span one vector; default :func:`fan_in_axes` of each leaf.
    mask: which leaves to constrain (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation`` that needs ``params`` in ``update``.

  Raises:
    TypeError: if ``max_value`` is not a real number (0-d arrays and traced
      scalars are; a schedule is not).
    ValueError: if ``max_value`` is not > 0 (NaN included) or not a scalar.

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
    proposed = jax.tree.map(lambda u, p: p + u, updates, params)
    projected = _project_tree(params, flags, max_value, axis, proposed)
    return jax.tree.map(lambda flag, u, p, q: q - p if flag else u, flags, updates, params, projected), state

  return optax.GradientTransformation(init_fn, update_fn)
