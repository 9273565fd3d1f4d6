"""Weight penalties to add to a loss: L1, squared L2, the plain L2 norm, elastic net.

Each takes a parameter pytree and an optional ``mask`` (see
:func:`jaxdrop.decay_mask`; by default weight matrices and conv kernels only),
and returns a float32 scalar (float64 for float64 parameters) to be multiplied
by the user's coefficient: ``loss + lam * l2_penalty(params)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxdrop import _checks
from jaxdrop._param_masks import Mask, resolve_mask

__all__ = ["elastic_net_penalty", "l1_penalty", "l2_norm_penalty", "l2_penalty"]


def _sum_over(params: Any, mask: Mask, per_leaf) -> jax.Array:
  flags = jax.tree.leaves(resolve_mask(params, mask))
  leaves = jax.tree.leaves(params)
  terms = []
  for flag, leaf in zip(flags, leaves, strict=True):
    if flag:
      leaf = jnp.asarray(leaf)
      terms.append(per_leaf(leaf.astype(_checks.compute_dtype(leaf.dtype))))
  if not terms:
    return jnp.zeros((), jnp.float32)
  dtype = jnp.result_type(*terms)
  return sum((t.astype(dtype) for t in terms[1:]), terms[0].astype(dtype))


def _abs_sum(w: jax.Array) -> jax.Array:
  # w * sign(w) == |w|, with the subgradient 0 at w == 0 (as torch.abs), where
  # jnp.abs's gradient would be 1 and push exact zeros away from zero.
  return jnp.sum(w * jax.lax.stop_gradient(jnp.sign(w)))


def l1_penalty(params: Any, mask: Mask = None) -> jax.Array:
  """``sum |w|`` over the selected leaves (the lasso penalty).

  Its gradient is ``sign(w)``, 0 at ``w == 0``.

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
  (:func:`jaxdrop.sgd` with ``weight_decay=lam``) optimizes.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> float(jaxdrop.l2_penalty({"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])}))
    2.5
  """
  return _sum_over(params, mask, lambda w: jnp.sum(jnp.square(w)) / 2)


def l2_norm_penalty(params: Any, mask: Mask = None) -> jax.Array:
  """``sum_leaves ||w||_2``: the plain (non-squared) norm of each leaf, summed.

  This is the PyTorch idiom ``sum(torch.norm(p, 2) for p in model.parameters())``
  (pass ``mask=jaxdrop.all_params`` to include biases as it does). Its gradient is
  ``w / ||w||`` and is 0, not NaN, for an all-zero leaf.

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
    A scalar penalty.

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
      lambda w: l1_ratio * _abs_sum(w) + (1 - l1_ratio) * jnp.sum(jnp.square(w)) / 2,
  )
