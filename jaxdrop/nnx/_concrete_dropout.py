"""Concrete dropout as an NNX wrapper around the layer whose inputs it drops."""

from __future__ import annotations

import jax
from flax import nnx

from jaxdrop._concrete_dropout import concrete_dropout, concrete_dropout_regularizer
from jaxdrop._layers import logit_uniform
from jaxdrop.nnx._base import StochasticModule

__all__ = ["ConcreteDropout"]


class ConcreteDropout(StochasticModule):
  """``layer(concrete_dropout(inputs, sigmoid(p_logit)))`` with a learned rate (Gal, Hron & Kendall, 2017).

  Add :meth:`regularizer` to the loss (it uses the layer's ``kernel`` and the
  current rate); ``rate`` is the current drop probability. At evaluation
  (``model.eval()``) the inputs pass unchanged: the layer is deterministic.

  Args:
    layer: the wrapped layer, with a ``kernel`` parameter (e.g. ``nnx.Linear``).
    length_scale: the prior length-scale of the weights.
    data_size: the number of training examples.
    precision: the model precision (1 for classification).
    temperature: of the concrete relaxation.
    init_rate: ``(low, high)`` of the initial rate (default 0.1).
    deterministic: ``True`` for evaluation.
    rng_collection: the stream forked from ``rngs``.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> rngs = nnx.Rngs(0)
    >>> layer = jdx.ConcreteDropout(nnx.Linear(3, 4, rngs=rngs), length_scale=1e-2, data_size=100, rngs=rngs)
    >>> layer(jnp.ones((2, 3))).shape, round(float(layer.rate), 3), layer.regularizer().shape
    ((2, 4), 0.1, ())
  """

  _rngs_optional = False  # its rngs also draws the parameters

  def __init__(
      self,
      layer: nnx.Module,
      *,
      length_scale: float,
      data_size: int,
      precision: float = 1.0,
      temperature: float = 0.1,
      init_rate: tuple[float, float] = (0.1, 0.1),
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.layer = layer
    self.p_logit = nnx.Param(logit_uniform(*init_rate)(rngs.params(), ()))
    self.length_scale, self.data_size = length_scale, data_size
    self.precision, self.temperature = precision, temperature

  @property
  def rate(self) -> jax.Array:
    """The current drop probability, ``sigmoid(p_logit)``."""
    return jax.nn.sigmoid(self.p_logit[...])

  def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
    """Drops the inputs (unless deterministic) and applies the layer."""
    deterministic, key = self.resolve(deterministic, rngs, random=True)
    x = inputs
    if not deterministic and key is not None:  # random=True: a key whenever the layer is not deterministic
      x = concrete_dropout(key, inputs, self.rate, temperature=self.temperature)
    return self.layer(x)

  def regularizer(self, input_dim: int | None = None) -> jax.Array:
    """:func:`jaxdrop.concrete_dropout_regularizer` of the layer's kernel at the current rate."""
    # Any layer with a kernel parameter: nnx.Module declares none (Python's types cannot say "a Module with").
    kernel = self.layer.kernel[...]  # type: ignore[attr-defined]
    return concrete_dropout_regularizer(
        kernel, self.rate, length_scale=self.length_scale, data_size=self.data_size, precision=self.precision,
        input_dim=input_dim)
