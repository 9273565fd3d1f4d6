"""What every jaxdrop NNX layer shares: ``deterministic``, ``rngs`` and ``set_view``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxdrop._checks import check_rate
from jaxdrop.linen._base import needs_key


class StochasticModule(nnx.Module):
  """Base class following ``flax.nnx.Dropout``'s conventions.

  ``deterministic`` is an attribute (so ``model.train()``, ``model.eval()``
  and ``nnx.view(model, deterministic=...)`` switch it) that a call-time
  argument overrides. The key comes from the call-time ``rngs`` (an ``Rngs``,
  an ``RngStream`` or a key) if given, else from the stream forked from the
  constructor's ``rngs``.
  """

  def __init__(
      self,
      *,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs | nnx.RngStream | None = None,
  ):
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    if isinstance(rngs, nnx.Rngs):
      self.rngs = rngs[rng_collection].fork()
    elif isinstance(rngs, nnx.RngStream):
      self.rngs = rngs.fork()
    elif rngs is None:
      self.rngs = nnx.data(None)
    else:
      raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}.")

  def resolve(self, deterministic: bool | None, rngs, *rates, random: bool | None = None
              ) -> tuple[bool, jax.Array | None]:
    """Returns ``(deterministic, key)``; ``key`` is ``None`` when none is needed (see the linen base)."""
    name = type(self).__name__
    if deterministic is None:
      deterministic = self.deterministic
    if deterministic is None:
      raise ValueError(
          f"No `deterministic` argument was provided to {name}. Pass it to the constructor"
          f" ({name}(..., deterministic=True/False)), at call time (layer(x,"
          " deterministic=True/False)), or set it with model.train() / model.eval()."
      )
    for rate in rates:
      check_rate(rate)
    if deterministic or not (needs_key(*rates) if random is None else random):
      return bool(deterministic), None
    if rngs is None:
      rngs = self.rngs
    if rngs is None:
      raise ValueError(
          f"{name} is not deterministic but has no random stream: construct it with"
          f" rngs=nnx.Rngs({self.rng_collection}=0), pass rngs= (an nnx.Rngs, RngStream or"
          " key) at call time, or call model.eval() for evaluation."
      )
    if isinstance(rngs, nnx.Rngs):
      return False, rngs[self.rng_collection]()
    if isinstance(rngs, nnx.RngStream):
      return False, rngs()
    if isinstance(rngs, jax.Array):
      return False, rngs
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or a key, got {type(rngs).__name__}.")

  def set_view(self, deterministic: bool | None = None):
    """Used by ``nnx.view(model, deterministic=...)``."""
    if deterministic is not None:
      self.deterministic = deterministic


class RateModule(StochasticModule):
  """A layer with one drop rate (``self.rate``): one ``__call__`` for all; subclasses define ``_train``
  (and ``_eval``, the identity by default)."""

  rate: float

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      rate: float | jax.Array | None = None,
  ) -> jax.Array:
    """Applies the layer (training unless deterministic); ``rate`` overrides ``self.rate`` for this call."""
    rate = self.rate if rate is None else rate
    deterministic, key = self.resolve(deterministic, rngs, rate)
    return self._eval(inputs, rate) if deterministic else self._train(key, inputs, rate)

  def _train(self, key: jax.Array | None, inputs: jax.Array, rate) -> jax.Array:
    raise NotImplementedError

  def _eval(self, inputs: jax.Array, rate) -> jax.Array:
    del rate
    return inputs
