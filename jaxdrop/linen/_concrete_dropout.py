"""Concrete dropout as a linen wrapper around the layer whose inputs it drops."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxdrop._concrete_dropout import concrete_dropout, concrete_dropout_regularizer
from jaxdrop._layers import logit_uniform
from jaxdrop.linen._base import StochasticModule

__all__ = ["ConcreteDropout"]


class ConcreteDropout(StochasticModule):
  """``layer(concrete_dropout(inputs, sigmoid(p_logit)))`` with a learned rate (Gal, Hron & Kendall, 2017).

  As the reference Keras wrapper: the layer's inputs are dropped with the
  rate in the ``p_logit`` parameter, and the layer's regularizer
  (:func:`jaxdrop.concrete_dropout_regularizer` of its kernel) is sown into
  the ``"losses"`` collection, to be added to the loss (``apply(...,
  mutable=["losses"])``). At evaluation (``deterministic``) the inputs pass
  unchanged: the layer is deterministic.

  Attributes:
    layer: the wrapped layer, with a ``kernel`` parameter (e.g. ``nn.Dense``).
    length_scale: the prior length-scale of the weights.
    data_size: the number of training examples.
    precision: the model precision (1 for classification).
    temperature: of the concrete relaxation.
    init_rate: ``(low, high)`` of the initial rate (default 0.1).

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.ConcreteDropout(nn.Dense(4), length_scale=1e-2, data_size=100)
    >>> x = jnp.ones((2, 3))
    >>> params = layer.init(jax.random.key(0), x, deterministic=True)["params"]
    >>> y, state = layer.apply({"params": params}, x, deterministic=False,
    ...                        rngs={"dropout": jax.random.key(1)}, mutable=["losses"])
    >>> round(float(jax.nn.sigmoid(params["p_logit"])), 3), y.shape, len(jax.tree.leaves(state["losses"]))
    (0.1, (2, 4), 1)
  """

  layer: nn.Module
  length_scale: float
  data_size: int
  precision: float = 1.0
  temperature: float = 0.1
  init_rate: tuple[float, float] = (0.1, 0.1)

  @nn.compact
  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None
  ) -> jax.Array:
    """Drops the inputs (unless deterministic), applies the layer and sows its regularizer."""
    rate = jax.nn.sigmoid(self.param("p_logit", logit_uniform(*self.init_rate), ()))
    deterministic, key = self.resolve(deterministic, rng, random=True)
    x = inputs
    if not deterministic and key is not None:  # random=True: a key whenever the layer is not deterministic
      x = concrete_dropout(key, inputs, rate, temperature=self.temperature)
    outputs = self.layer(x)
    kernel = self.layer.variables["params"]["kernel"]
    self.sow("losses", "concrete_dropout", concrete_dropout_regularizer(
        kernel, rate, length_scale=self.length_scale, data_size=self.data_size, precision=self.precision,
        input_dim=inputs.shape[-1]))
    return outputs
