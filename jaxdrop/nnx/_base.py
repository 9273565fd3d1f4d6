"""What every jaxdrop NNX layer shares: ``deterministic``, ``rngs`` and ``set_view``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxdrop._layers import draws_key

__all__ = ["RateModule", "StochasticModule", "stream"]


def stream(
    rngs: nnx.Rngs, rng_collection: str, layer: str, *, at_call: bool = False, fix: str = ""
) -> nnx.RngStream:
  """``rngs[rng_collection]`` (or its ``default`` stream, as flax falls back to it); where ``rngs`` has
  neither, a ``ValueError`` that says which ``nnx.Rngs`` to pass, instead of flax's ``KeyError``.

  Args:
    rngs: the ``nnx.Rngs`` given to the constructor (or, with ``at_call``, to a call).
    rng_collection: the layer's stream, ``"dropout"`` by default.
    layer: the layer's name, for the message.
    at_call: whether ``rngs`` was passed at call time.
    fix: another way out, appended to the message (``", or with rngs=None and pass rngs= at call time"``).

  Raises:
    ValueError: if ``rngs`` has no such stream and no ``default`` stream.

  Example:
    >>> from flax import nnx
    >>> stream(nnx.Rngs(params=0), "dropout", "Dropout")
    Traceback (most recent call last):
    ...
    ValueError: Dropout needs a "dropout" random stream, but its rngs has none (its streams: params): ...
  """
  try:
    return rngs[rng_collection]
  except KeyError:
    pass
  names = list(rngs)
  example = f"nnx.Rngs({rng_collection}=0)"
  if "params" in names:
    example = f"nnx.Rngs(params=0, {rng_collection}=1)"
  whose, verb = ("the rngs passed at call time", "pass") if at_call else ("its rngs", "construct it with")
  raise ValueError(
      f'{layer} needs a "{rng_collection}" random stream, but {whose} has none (its streams:'
      f" {', '.join(names) or 'none'}): {verb} rngs=nnx.Rngs(0) or {example}{fix}."
  ) from None


class StochasticModule(nnx.Module):
  """Base class following ``flax.nnx.Dropout``'s conventions.

  ``deterministic`` is an attribute (so ``model.train()``, ``model.eval()``
  and ``nnx.view(model, deterministic=...)`` switch it) that a call-time
  argument overrides. The key comes from the call-time ``rngs`` (an ``Rngs``,
  an ``RngStream`` or a key) if given, else from the stream forked from the
  constructor's ``rngs``.
  """

  _rngs_optional = True  # whether the constructor's rngs may be None (False where it also draws parameters)

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
      fix = ", or with rngs=None and pass rngs= at call time" if self._rngs_optional else ""
      self.rngs = stream(rngs, rng_collection, type(self).__name__, fix=fix).fork()
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
    if not draws_key(deterministic, *rates, random=random):
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
      return False, stream(rngs, self.rng_collection, name, at_call=True, fix=", an nnx.RngStream or a key")()
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
