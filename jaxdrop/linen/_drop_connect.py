"""A linen dense layer with DropConnect on its kernel."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdrop._drop_connect import drop_connect
from jaxdrop._dropout import Mode, dropout_eval
from jaxdrop.linen._base import StochasticModule

__all__ = ["DropConnectDense"]


class DropConnectDense(StochasticModule):
  """``nn.Dense`` whose kernel goes through :func:`jaxdrop.drop_connect` while training.

  One kernel mask is drawn per call and shared by the whole batch; the bias is
  never dropped. Parameters are named ``kernel`` and ``bias`` like ``nn.Dense``.

  Attributes:
    features: number of output features.
    rate: probability of dropping each connection.
    use_bias: whether to add a bias.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision.
    kernel_init: kernel initializer.
    bias_init: bias initializer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.DropConnectDense(4, rate=0.5)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 3)), deterministic=True)
    >>> layer.apply(variables, jnp.ones((2, 3)), deterministic=False,
    ...             rngs={"dropout": jax.random.key(1)}).shape
    (2, 4)
  """

  features: int
  rate: float = 0.5
  use_bias: bool = True
  mode: Mode = "inverted"
  mask_bits: int = 16
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      rate: float | jax.Array | None = None,
  ):
    rate = self.rate if rate is None else rate
    kernel = self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features), jnp.float32)
    deterministic, key = self.resolve(deterministic, rng, rate)
    if deterministic:
      kernel = dropout_eval(kernel, rate, mode=self.mode, mask_bits=self.mask_bits)
    else:
      kernel = drop_connect(key, kernel, rate, mode=self.mode, mask_bits=self.mask_bits)
    y = inputs @ kernel
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
      y = y + jnp.broadcast_to(bias, y.shape)
    return y
