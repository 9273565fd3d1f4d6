"""Weight penalties to add to a loss: L1, squared L2, the plain L2 norm, elastic net, orthogonality.

Each takes a parameter pytree and an optional ``mask`` (see
:func:`jaxdrop.decay_mask`; by default weight matrices and conv kernels only),
and returns a real float32 scalar (float64 for float64 parameters) to be
multiplied by the user's coefficient: ``loss + lam * l2_penalty(params)``.

Half-precision leaves are summed in float32. Integer (and bool) leaves are
converted to the default float dtype first (float32; float64 under
``jax_enable_x64``), so that ``w**2`` cannot overflow. Complex leaves are
measured by their modulus, as ``numpy.linalg.norm`` and ``torch.norm`` do:
``|w|`` and ``|w|**2 = re**2 + im**2``, a real result in the leaf's real dtype
(float32 for complex64); ``jax.grad`` of a penalty with respect to a complex
leaf follows JAX's convention for real functions of complex inputs (the
conjugate of the steepest-ascent direction: ``conj(w)`` for ``l2_penalty``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdrop import _checks
from jaxdrop._param_masks import Mask, resolve_mask

__all__ = ["elastic_net_penalty", "l1_penalty", "l2_norm_penalty", "l2_penalty", "orthogonal_penalty"]

ORTHOGONAL_MODES = ("rows", "columns")


def _as_computed(path, leaf) -> jax.Array:
  """``leaf`` in the dtype its penalty is computed in (see the module's docstring)."""
  leaf = jnp.asarray(leaf)
  dtype = leaf.dtype
  if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
    return leaf.astype(jax.dtypes.canonicalize_dtype(jnp.float64))  # the default float dtype
  if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating):
    return leaf.astype(_checks.compute_dtype(dtype))
  raise TypeError(
      f"params leaf {jax.tree_util.keystr(path)} has dtype {dtype}, which a penalty cannot measure;"
      " leave it out with mask= (e.g. jaxdrop.decay_mask(exclude=(...)))."
  )


def _sum_over(params: Any, mask: Mask, per_leaf) -> jax.Array:
  flags = jax.tree.leaves(resolve_mask(params, mask))
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  terms = []
  for flag, (path, leaf) in zip(flags, leaves, strict=True):
    if flag:
      terms.append(per_leaf(_as_computed(path, leaf)))
  if not terms:
    return jnp.zeros((), jnp.float32)
  dtype = jnp.result_type(*terms)
  return sum((t.astype(dtype) for t in terms[1:]), terms[0].astype(dtype))


def _abs_sum(w: jax.Array) -> jax.Array:
  if jnp.issubdtype(w.dtype, jnp.complexfloating):
    # |w| with the double where: at w == 0 the modulus' derivative is undefined (NaN), and the
    # subgradient taken is 0, as for real leaves.
    nonzero = w != 0
    return jnp.sum(jnp.where(nonzero, jnp.abs(jnp.where(nonzero, w, 1)), 0))
  # w * sign(w) == |w|, with the subgradient 0 at w == 0 (as torch.abs), where
  # jnp.abs's gradient would be 1 and push exact zeros away from zero.
  return jnp.sum(w * jax.lax.stop_gradient(jnp.sign(w)))


def _square_sum(w: jax.Array) -> jax.Array:
  if jnp.issubdtype(w.dtype, jnp.complexfloating):
    return jnp.sum(jnp.square(w.real) + jnp.square(w.imag))  # |w|^2, real
  return jnp.sum(jnp.square(w))


def l1_penalty(params: Any, mask: Mask = None) -> jax.Array:
  """``sum |w|`` over the selected leaves (the lasso penalty).

  Its gradient is ``sign(w)``, 0 at ``w == 0``. For complex leaves ``|w|`` is
  the modulus (gradient ``conj(w) / |w|`` in JAX's convention, 0 at 0);
  integer leaves are summed in the default float dtype.

  Raises:
    TypeError: if a selected leaf is not numeric (a PRNG key, say).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.l1_penalty({"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])}))
    3.0
  """
  return _sum_over(params, mask, _abs_sum)


def l2_penalty(params: Any, mask: Mask = None) -> jax.Array:
  """``sum w**2 / 2`` over the selected leaves (d2l's convention; gradient ``w``).

  ``loss + lam * l2_penalty(params)`` is what coupled weight decay
  (:func:`jaxdrop.sgd` with ``weight_decay=lam``) optimizes. For complex
  leaves ``w**2`` is ``|w|**2`` (real; gradient ``conj(w)`` in JAX's
  convention); integer leaves are squared in the default float dtype (no
  int32 overflow).

  Raises:
    TypeError: if a selected leaf is not numeric (a PRNG key, say).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.l2_penalty({"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])}))
    2.5
  """
  return _sum_over(params, mask, lambda w: _square_sum(w) / 2)


def l2_norm_penalty(params: Any, mask: Mask = None) -> jax.Array:
  """``sum_leaves ||w||_2``: the plain (non-squared) norm of each leaf, summed.

  This is the PyTorch idiom ``sum(torch.norm(p, 2) for p in model.parameters())``
  (pass ``mask=jaxdrop.all_params`` to include biases as it does). Its gradient is
  ``w / ||w||`` and is 0, not NaN, for an all-zero leaf. Complex leaves are
  measured by their modulus, integer leaves in the default float dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.l2_norm_penalty({"kernel": jnp.array([[3.0, 4.0]])}))
    5.0
  """
  return _sum_over(params, mask, lambda w: optax.safe_norm(w.reshape(-1), 0.0))


def elastic_net_penalty(params: Any, l1_ratio: float = 0.5, mask: Mask = None) -> jax.Array:
  """``l1_ratio * l1_penalty + (1 - l1_ratio) * l2_penalty`` (scikit-learn's mix).

  Args:
    params: a parameter pytree.
    l1_ratio: weight of the L1 term in ``[0, 1]``; 1 is the lasso, 0 ridge.
    mask: which leaves to penalize (default: weights only).

  Returns:
    A real scalar penalty (complex and integer leaves as in :func:`l1_penalty`
    and :func:`l2_penalty`).

  Raises:
    ValueError: if ``l1_ratio`` is outside ``[0, 1]``.
    TypeError: if ``l1_ratio`` is not a real number, or a selected leaf is not numeric.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.elastic_net_penalty({"kernel": jnp.array([[1.0, -2.0]])}, l1_ratio=0.5))
    2.75
  """
  l1_ratio = _checks.check_rate(l1_ratio, name="l1_ratio", meaning="the weight of the L1 term")
  return _sum_over(
      params,
      mask,
      lambda w: l1_ratio * _abs_sum(w) + (1 - l1_ratio) * _square_sum(w) / 2,
  )


def orthogonal_penalty(params: Any, mode: str = "rows", mask: Mask = None) -> jax.Array:
  """The mean absolute cosine between the rows (or columns) of each selected matrix, summed over them.

  Keras' ``OrthogonalRegularizer(factor, mode)(kernel)`` is
  ``factor * orthogonal_penalty(kernel, mode)``: each row (``mode="rows"``) or
  column is L2-normalized (as ``tf.math.l2_normalize``: by
  ``sqrt(max(sum w**2, 1e-12))``), and the penalty is half the sum of the
  absolute off-diagonal entries of their Gram matrix over the number of pairs,
  ``n (n - 1) / 2``: 0 for orthogonal rows, 1 for parallel ones. On a Dense
  kernel ``(inputs, units)``, ``"rows"`` pushes the input features' weight
  vectors apart and ``"columns"`` the units'.

  Args:
    params: a 2-D array, or a pytree whose selected leaves are 2-D.
    mode: ``"rows"`` or ``"columns"``.
    mask: which leaves to penalize (default: weight matrices and conv
      kernels; select only matrices, e.g. with :func:`jaxdrop.decay_mask`).

  Returns:
    A float32 scalar (float64 for float64 leaves).

  Raises:
    ValueError: if ``mode`` is not one of them, a selected leaf is not 2-D,
      or it has fewer than two rows (columns) to compare.
    TypeError: if a selected leaf is complex or not numeric.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.orthogonal_penalty(jnp.eye(3)))  # orthogonal rows
    0.0
    >>> round(float(jaxdrop.orthogonal_penalty(jnp.array([[1.0, 0.0], [1.0, 1.0]]))), 6)  # rows at 45 degrees
    0.707107
  """
  if mode not in ORTHOGONAL_MODES:
    raise ValueError(f"mode must be 'rows' or 'columns' (which vectors of each matrix to make orthogonal),"
                     f" got mode={mode!r}.")
  if not isinstance(params, (dict, list, tuple)) and jnp.ndim(params) == 2:
    mask = True  # a bare matrix is always penalized (the default mask would take it for a kernel anyway)
  axis = 1 if mode == "rows" else 0

  def per_leaf(w: jax.Array) -> jax.Array:
    if jnp.issubdtype(w.dtype, jnp.complexfloating):
      raise TypeError(f"orthogonal_penalty measures real matrices, got a {w.dtype} leaf; leave it out with"
                      " mask=.")
    if w.ndim != 2:
      raise ValueError(f"orthogonal_penalty needs 2-D matrices (as Keras' OrthogonalRegularizer), got a leaf"
                       f" of shape {w.shape}; reshape it to 2-D or leave it out with mask=.")
    size = w.shape[1 - axis]
    if size < 2:
      raise ValueError(f"orthogonal_penalty with mode={mode!r} compares the {mode} of each matrix; a leaf of"
                       f" shape {w.shape} has {size}, and it needs at least 2.")
    unit = w * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(w), axis=axis, keepdims=True), 1e-12))
    gram = unit @ unit.T if mode == "rows" else unit.T @ unit
    off_diagonal = jnp.sum(jnp.abs(gram)) - jnp.sum(jnp.abs(jnp.diagonal(gram)))
    return 0.5 * off_diagonal / (size * (size - 1) / 2)

  return _sum_over(params, mask, per_leaf)
