"""LayerDrop as a linen layer: a wrapped layer that a scanned stack skips, compute and all."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxdrop import _checks
from jaxdrop._layer_drop import invalid_as_nan, layer_drop_mask
from jaxdrop.linen._base import StochasticModule

__all__ = ["LayerDrop"]


class LayerDrop(StochasticModule):
  """LayerDrop (Fan et al., 2019; fairseq's ``LayerDropModuleList``) of one wrapped layer.

  While training, ``layer`` is skipped with probability ``rate``: one draw per
  call, shared over the batch; a skipped layer returns its input unchanged,
  through ``nn.cond``, so its compute is not spent and its parameters get zero
  gradients. Evaluation runs the layer (fairseq's semantics: no rescaling).
  In a stack in ``nn.scan`` (``split_rngs={"params": True, "dropout": True}``)
  each layer gets its own draw; ``rate=`` at call time may be scanned too.
  ``init`` always runs the layer (it creates its parameters).

  Attributes:
    layer: the wrapped layer, ``layer(x, *args, **kwargs) -> x`` (the same structure, shapes and dtypes).
    rate: the probability of skipping the layer (not of running it).
    mask_bits: precision of the draw, as in :func:`jaxdrop.layer_drop_mask`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> from jaxdrop import linen as jdl
    >>> class Block(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     return x + nn.Dense(x.shape[-1])(x)
    >>> class Body(nn.Module):  # one layer of the scanned stack
    ...   @nn.compact
    ...   def __call__(self, x, _):
    ...     return jdl.LayerDrop(Block(), rate=0.5)(x, deterministic=False), None
    >>> Stack = nn.scan(Body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
    ...                 length=4)
    >>> x = jnp.ones((2, 3))
    >>> variables = Stack().init(jax.random.key(0), x, None)
    >>> y, _ = Stack().apply(variables, x, None, rngs={"dropout": jax.random.key(1)})
    >>> y.shape
    (2, 3)
  """

  layer: nn.Module | None = None
  rate: float = 0.0
  mask_bits: int = 16

  @nn.compact
  def __call__(self, x: Any, *args: Any, deterministic: bool | None = None, rng: jax.Array | None = None,
               rate: float | jax.Array | None = None, **kwargs: Any) -> Any:
    """Runs ``layer(x, *args, **kwargs)`` or skips it (returns ``x``); ``rate`` overrides ``self.rate``."""
    if self.layer is None:
      raise ValueError("LayerDrop needs the layer to wrap: LayerDrop(layer=Block(), rate=...).")
    rate = _checks.check_rate(self.rate if rate is None else rate)
    deterministic, key = self.resolve(deterministic, rng, rate)
    if deterministic or self.is_initializing() or (isinstance(rate, float) and rate == 0.0):
      return self.layer(x, *args, **kwargs)
    if isinstance(rate, float) and rate == 1.0:
      return x
    keep = layer_drop_mask(key, 1, rate, mask_bits=self.mask_bits)[0]
    out = nn.cond(keep, lambda mdl, x, *a: mdl.layer(x, *a, **kwargs), lambda mdl, x, *a: x, self, x, *args)
    return invalid_as_nan(out, rate)
