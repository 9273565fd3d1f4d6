"""LayerDrop as an NNX layer: a wrapped layer that a scanned stack skips, compute and all."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxdrop import _checks
from jaxdrop._layer_drop import invalid_as_nan, layer_drop_mask
from jaxdrop.nnx._base import StochasticModule

__all__ = ["LayerDrop"]


class LayerDrop(StochasticModule):
  """LayerDrop (Fan et al., 2019; fairseq's ``LayerDropModuleList``) of one wrapped layer.

  While training, ``layer`` is skipped with probability ``rate``: one draw per
  call, shared over the batch; a skipped layer returns its input unchanged,
  through ``nnx.cond``, so its compute is not spent and its parameters get
  zero gradients. Evaluation (``model.eval()``) runs the layer (fairseq's
  semantics: no rescaling). Built under ``nnx.vmap`` (``nnx.split_rngs``) and
  run in ``nnx.scan``, each layer of the stack gets its own draw.

  Args:
    layer: the wrapped layer, ``layer(x, *args, **kwargs) -> x`` (the same structure, shapes and dtypes).
    rate: the probability of skipping the layer (not of running it); ``rate=`` at call time overrides it.
    mask_bits: precision of the draw, as in :func:`jaxdrop.layer_drop_mask`.
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the stream of the draws.
    rngs: an ``nnx.Rngs`` (its ``"dropout"`` stream is forked), an ``nnx.RngStream`` or ``None``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> @nnx.split_rngs(splits=4)
    ... @nnx.vmap(in_axes=(0,), out_axes=0)
    ... def stack(rngs):  # 4 layers, stacked
    ...   return jdx.LayerDrop(nnx.Linear(3, 3, rngs=rngs), rate=0.5, rngs=rngs)
    >>> layers = stack(nnx.Rngs(0))
    >>> @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    ... def run(layer, x):
    ...   return layer(x)
    >>> run(layers, jnp.ones((2, 3))).shape
    (2, 3)
  """

  def __init__(
      self,
      layer: nnx.Module,
      rate: float = 0.0,
      *,
      mask_bits: int = 16,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs | nnx.RngStream | None = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.layer = layer
    self.rate = _checks.check_rate(rate)
    self.mask_bits = _checks.check_mask_bits(mask_bits)

  def __call__(self, x: Any, *args: Any, deterministic: bool | None = None, rngs=None,
               rate: float | jax.Array | None = None, **kwargs: Any) -> Any:
    """Runs ``layer(x, *args, **kwargs)`` or skips it (returns ``x``); ``rate`` overrides ``self.rate``."""
    rate = _checks.check_rate(self.rate if rate is None else rate)
    deterministic, key = self.resolve(deterministic, rngs, rate)
    if deterministic or (isinstance(rate, float) and rate == 0.0):
      return self.layer(x, *args, **kwargs)
    if isinstance(rate, float) and rate == 1.0:
      return x
    keep = layer_drop_mask(key, 1, rate, mask_bits=self.mask_bits)[0]
    out = nnx.cond(keep, lambda layer, x, *a: layer(x, *a, **kwargs), lambda layer, x, *a: x, self.layer, x,
                   *args)
    return invalid_as_nan(out, rate)
