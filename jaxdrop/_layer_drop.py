"""LayerDrop (Fan et al., 2019): skip whole layers of a stack, really skipping their compute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _bits, _checks
from jaxdrop._masked import keep_for

__all__ = ["invalid_as_nan", "layer_drop", "layer_drop_mask"]


def layer_drop_mask(key: jax.Array | None, depth: int, rate: float | jax.Array, *,
                    mask_bits: int = 16) -> jax.Array:
  """Which of ``depth`` layers run: each is kept with probability ``1 - rate``, one draw per layer.

  fairseq's ``LayerDropModuleList`` draws one uniform number per layer on each
  forward pass and keeps the layer where it exceeds ``p``; here the draw comes
  from the packed-bits mask generator (the layers' lanes of the key's stream).

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is a concrete 0 or 1.
    depth: the number of layers (a positive int).
    rate: the drop probability of each layer, a Python float or a traced scalar.
    mask_bits: the precision of the draw, 16 (default), 8 or 32.

  Returns:
    A boolean ``[depth]`` array, ``True`` for a kept layer (all ``False`` for an invalid traced rate).

  Raises:
    ValueError: for a concrete rate outside ``[0, 1]``, a bad ``depth`` or ``mask_bits``, or no key.

  Example:
    >>> import jax, jaxdrop
    >>> jaxdrop.layer_drop_mask(jax.random.key(0), 6, 0.5).shape
    (6,)
  """
  rate = _checks.check_rate(rate)
  _checks.check_mask_bits(mask_bits)
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ValueError(f"depth must be a positive integer (the number of layers), got depth={depth!r}.")
  if isinstance(rate, float) and rate in (0.0, 1.0):
    return jnp.full((depth,), rate == 0.0)
  seed = _bits.derive_seed(_checks.check_key(key, fn="jaxdrop.layer_drop_mask"))
  return _bits.bernoulli_lanes(seed, (depth,), keep_for(rate, mask_bits).threshold, mask_bits)


def invalid_as_nan(tree: Any, rate) -> Any:
  """``tree`` with NaN added to its floating leaves where a traced ``rate`` is outside ``[0, 1]``
  (unchanged for a Python float rate, which is checked instead)."""
  if isinstance(rate, float):
    return tree
  rate = jnp.asarray(rate, jnp.float32)
  nan = jnp.where((rate >= 0) & (rate <= 1), 0.0, jnp.nan)
  return jax.tree.map(lambda x: x + nan.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def layer_drop(
    key: jax.Array | None,
    layer_fn: Callable[[Any, Any], Any],
    params: Any,
    carry: Any,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    mask_bits: int = 16,
    unroll: int | bool = 1,
) -> Any:
  """A scanned stack of layers with LayerDrop: ``carry = layer_fn(params[i], carry)`` for the kept layers.

  Fan et al. (2019), as fairseq's ``LayerDropModuleList``: while training, each
  layer is dropped with probability ``rate``, one draw per layer per call,
  shared over the batch; a dropped layer passes its input through unchanged.
  Its compute is really skipped: the scan's body is a ``lax.cond`` between the
  layer and the identity, so a dropped layer's FLOPs are not spent (forward
  and backward), and its parameters get zero gradients. There is no
  rescaling, and evaluation (``deterministic=True``) runs every layer
  (fairseq's semantics; its pruning at inference, ``layers_to_keep``, is
  slicing ``params``).

  Args:
    key: a PRNG key; may be ``None`` when deterministic, or when ``rate`` is a concrete 0 or 1.
    layer_fn: ``layer_fn(layer_params, carry) -> carry`` (the same structure, shapes and dtypes).
    params: the layers' parameters, stacked: every leaf has a leading axis of the depth.
    carry: the stack's input.
    rate: each layer's drop probability (a Python float or a traced scalar, e.g. a schedule).
    deterministic: run every layer (evaluation).
    mask_bits: the precision of the draw, as in :func:`layer_drop_mask`.
    unroll: ``lax.scan``'s ``unroll``.

  Returns:
    The last carry (NaN in its floating leaves for an invalid traced rate).

  Raises:
    ValueError: for a concrete rate outside ``[0, 1]``, ``params`` without leaves or with leading axes that
      differ, or no key while training.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> weights = jnp.stack([jnp.full((3, 3), 0.1 * i) for i in range(4)])  # 4 layers
    >>> layer = lambda w, x: x + jnp.tanh(x @ w)
    >>> x = jnp.ones((2, 3))
    >>> y = jaxdrop.layer_drop(jax.random.key(0), layer, weights, x, 0.5)
    >>> y.shape
    (2, 3)
    >>> everything = jaxdrop.layer_drop(None, layer, weights, x, 0.5, deterministic=True)  # evaluation
  """
  rate = _checks.check_rate(rate)
  leaves = jax.tree.leaves(params)
  depths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
  if not leaves or len(depths) != 1 or None in depths:
    raise ValueError("params must be the layers' parameters stacked along a leading axis (every leaf with the"
                     f" same leading size), got leading sizes {sorted(map(str, depths))}.")
  depth = int(depths.pop())  # type: ignore[arg-type]  # (not None: checked above)
  if deterministic or (isinstance(rate, float) and rate == 0.0):
    return lax.scan(lambda c, p: (layer_fn(p, c), None), carry, params, unroll=unroll)[0]
  keep = layer_drop_mask(key, depth, rate, mask_bits=mask_bits)

  def step(c, xs):
    p, kept = xs
    return lax.cond(kept, layer_fn, lambda _, c: c, p, c), None

  return invalid_as_nan(lax.scan(step, carry, (params, keep), unroll=unroll)[0], rate)
