"""An NNX linear layer with DropConnect on its kernel."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdrop._drop_connect import drop_connect
from jaxdrop._dropout import Mode, dropout_eval
from jaxdrop.nnx._base import StochasticModule

__all__ = ["DropConnectLinear"]

# nnx.Linear's defaults, made once (as flax does).
_KERNEL_INIT = nnx.initializers.lecun_normal()
_BIAS_INIT = nnx.initializers.zeros_init()


class DropConnectLinear(StochasticModule):
  """``nnx.Linear`` whose kernel goes through :func:`jaxdrop.drop_connect` while training.

  Args:
    in_features: input size.
    out_features: output size.
    rate: probability of dropping each connection.
    use_bias: whether to add a bias (never dropped).
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision.
    kernel_init: kernel initializer.
    bias_init: bias initializer.
    deterministic: ``True`` for evaluation.
    rng_collection: the dropout stream.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.DropConnectLinear(3, 4, rate=0.5, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 3))).shape
    (2, 4)
  """

  _rngs_optional = False  # its rngs also draws the parameters

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      rate: float = 0.5,
      use_bias: bool = True,
      mode: Mode = "inverted",
      mask_bits: int = 16,
      kernel_init: Any = _KERNEL_INIT,
      bias_init: Any = _BIAS_INIT,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.mode, self.mask_bits = rate, mode, mask_bits
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), jnp.float32))
    self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32)) if use_bias
                 else nnx.data(None))

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      rate: float | jax.Array | None = None,
  ) -> jax.Array:
    rate = self.rate if rate is None else rate
    deterministic, key = self.resolve(deterministic, rngs, rate)
    kernel = self.kernel[...]
    if deterministic:
      kernel = dropout_eval(kernel, rate, mode=self.mode, mask_bits=self.mask_bits)
    else:
      kernel = drop_connect(key, kernel, rate, mode=self.mode, mask_bits=self.mask_bits)
    y = inputs @ kernel
    return y if self.bias is None else y + jnp.broadcast_to(self.bias[...], y.shape)
