"""Which parameters a penalty, weight decay or max-norm constraint applies to.

A *mask* is one of:

* ``None``: the default, :func:`weights_only`: weight matrices, convolution
  kernels and embeddings; never biases, normalization scales or batch
  statistics, however they are stacked;
* a predicate ``(path, leaf) -> bool`` on each leaf and its key path, as given
  by ``jax.tree_util.tree_map_with_path`` (e.g. :func:`all_params`, or one
  built by :func:`decay_mask`);
* a pytree of Python bools with the structure of the parameters, or a prefix
  of it (as ``optax.masked`` takes).

How the default decides: by the leaf's name where Flax gives one (linen
variable dicts and NNX states alike: ``kernel`` and ``embedding`` are decayed;
``bias``, ``scale``, ``mean``, ``var`` and everything in a ``batch_stats``
collection are not), so that an ``nn.scan`` or ``nnx.vmap`` stack of biases
``(layers, features)`` or the 2-D biases of multi-head attention
``(heads, head_dim)`` stay undecayed; by rank only where the name says nothing
(plain dicts, custom names, Equinox's ``weight``): two or more dimensions is a
weight. Embeddings are decayed, as ``torch.optim.AdamW`` over
``model.parameters()`` and the usual "no decay for biases and norms" recipes
do: a lookup table is a weight matrix (often tied to the output layer).
Exclude them, or position embeddings and class tokens (decayed by rank), with
``decay_mask(exclude=("embedding", "pos_embedding"))``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Mask", "all_params", "decay_mask", "param_names", "resolve_mask", "weights_only"]

Mask = None | Callable[[Any, Any], bool] | Any
Selector = str | re.Pattern | Callable[[Any, Any], bool]

DECAYED_NAMES = frozenset({"kernel", "embedding"})
UNDECAYED_NAMES = frozenset({"bias", "scale", "mean", "var"})
STATISTICS_COLLECTIONS = frozenset({"batch_stats"})


def param_names(path) -> tuple[str, ...]:
  """The names along a key path: dict keys and attribute names (not list indices, nor NNX's ``.value``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> params = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 3))}}}
    >>> [jaxdrop.param_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    [('params', 'Dense_0', 'kernel')]
  """
  names = []
  for i, entry in enumerate(path):
    if isinstance(entry, jax.tree_util.DictKey):
      names.append(str(entry.key))
    elif isinstance(entry, jax.tree_util.GetAttrKey):
      if entry.name == "value" and i == len(path) - 1:  # an NNX Variable's payload
        continue
      names.append(entry.name)
  return tuple(names)


def weights_only(path, leaf) -> bool:
  """Default predicate: ``True`` for weights, kernels and embeddings, by Flax's names or else by rank.

  ``kernel`` and ``embedding`` leaves are weights; ``bias``, ``scale``,
  ``mean``, ``var`` and anything under ``batch_stats`` are not, whatever their
  rank (stacked layers, attention biases); other leaves are weights when they
  have two or more dimensions.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> stacked = {"kernel": jnp.zeros((4, 3, 3)), "bias": jnp.zeros((4, 3)), "w": jnp.zeros((3, 3))}
    >>> jaxdrop.resolve_mask(stacked)
    {'bias': False, 'kernel': True, 'w': True}
  """
  names = param_names(path)
  if STATISTICS_COLLECTIONS.intersection(names[:-1]):
    return False
  name = names[-1] if names else None
  if name in DECAYED_NAMES:
    return True
  if name in UNDECAYED_NAMES:
    return False
  return jnp.ndim(leaf) >= 2


def all_params(path, leaf) -> bool:
  """Predicate that selects every leaf, biases included (as a loop over ``model.parameters()`` does)."""
  del path, leaf
  return True


def _check_selector(selector, arg: str) -> Selector:
  if isinstance(selector, (str, re.Pattern)) or callable(selector):
    return selector
  raise TypeError(
      f"{arg} takes names (str), compiled regular expressions (re.compile(...)) or predicates"
      f" (path, leaf) -> bool, got {type(selector).__name__} {selector!r}."
  )


def selects(selector: Selector, path, leaf) -> bool:
  """Whether ``selector`` picks the leaf at ``path``.

  A ``str`` is a name that must appear in the path (a module or parameter
  name, exactly); an ``re.Pattern`` is searched in the ``/``-joined path
  (``"params/Encoder_0/pos_embedding"``); a callable is a predicate.
  """
  if isinstance(selector, str):
    return selector in param_names(path)
  if isinstance(selector, re.Pattern):
    return selector.search("/".join(param_names(path))) is not None
  return bool(selector(path, leaf))


def decay_mask(
    *,
    exclude: Sequence[Selector] = (),
    include: Sequence[Selector] = (),
    base: Callable[[Any, Any], bool] = weights_only,
) -> Callable[[Any, Any], bool]:
  """A mask predicate: ``base``, plus the leaves ``include`` selects, minus those ``exclude`` selects.

  Args:
    exclude: selectors of leaves never to decay (exclusion wins over
      inclusion). A ``str`` names a module or parameter (a path component,
      exactly), an ``re.Pattern`` is searched in the ``/``-joined path, a
      callable is a predicate ``(path, leaf) -> bool``.
    include: selectors of leaves to decay although ``base`` leaves them out.
    base: the predicate to start from (default :func:`weights_only`).

  Returns:
    A predicate ``(path, leaf) -> bool`` for any ``mask=`` argument.

  Example:
    >>> import re
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> params = {"pos_embedding": jnp.zeros((1, 4, 8)), "head": {"kernel": jnp.zeros((8, 2))},
    ...           "norm": {"scale": jnp.ones(8)}}
    >>> jaxdrop.resolve_mask(params, jaxdrop.decay_mask(exclude=("pos_embedding",), include=("norm",)))
    {'head': {'kernel': True}, 'norm': {'scale': True}, 'pos_embedding': False}
    >>> jaxdrop.resolve_mask(params, jaxdrop.decay_mask(exclude=(re.compile(r"^head/"),)))
    {'head': {'kernel': False}, 'norm': {'scale': False}, 'pos_embedding': True}
  """
  if isinstance(exclude, (str, re.Pattern)) or isinstance(include, (str, re.Pattern)):
    raise TypeError("exclude and include take a sequence of selectors, e.g. exclude=('pos_embedding',).")
  exclude = tuple(_check_selector(s, "exclude") for s in exclude)
  include = tuple(_check_selector(s, "include") for s in include)

  def predicate(path, leaf) -> bool:
    if any(selects(s, path, leaf) for s in exclude):
      return False
    return bool(base(path, leaf)) or any(selects(s, path, leaf) for s in include)

  return predicate


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
  if _is_predicate(mask):

    def decide(path, leaf):
      flag = mask(path, leaf)
      if not isinstance(flag, (bool, jnp.bool_)) and not (
          hasattr(flag, "dtype") and getattr(flag, "shape", None) == () and flag.dtype == bool
      ):
        raise TypeError(f"a mask predicate must return a bool, got {flag!r} at {jax.tree_util.keystr(path)}.")
      return bool(flag)

    return jax.tree_util.tree_map_with_path(decide, params)
  not_bools = [flag for flag in jax.tree.leaves(mask) if not _is_bool(flag)]
  if not_bools:  # "no" or 0.5 would count by truthiness
    raise TypeError(
        f"a pytree mask holds Python bools (True: selected), got {not_bools[0]!r}; use True or False."
    )
  try:
    return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: bool(flag), sub), mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "mask must be None, a predicate (path, leaf) -> bool, or a pytree of bools with"
        f" the structure of params (or a prefix of it): {e}"
    ) from None


def _is_bool(flag) -> bool:
  """A Python or NumPy bool, or a 0-d boolean array."""
  return isinstance(flag, (bool, np.bool_)) or (
      getattr(flag, "shape", None) == () and getattr(flag, "dtype", None) == np.bool_)


def _is_predicate(mask) -> bool:
  """optax's rule: a mask is a function when it is callable and all its pytree leaves are too.

  (An Equinox module of bools is callable but its leaves are not: it is a pytree mask.)
  """
  leaves = jax.tree.leaves(jax.tree.map(callable, mask))
  return callable(mask) and bool(leaves) and all(leaves)


def optax_mask(mask: Mask = None) -> Callable[[Any], Any]:
  """``mask`` as the callable ``params -> pytree of bools`` that ``optax.masked`` takes."""
  return lambda params: resolve_mask(params, mask)
