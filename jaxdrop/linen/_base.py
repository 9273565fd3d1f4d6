"""What every jaxdrop linen layer shares: ``deterministic`` and the dropout key."""

from __future__ import annotations

import dataclasses

import flax.errors
import flax.linen as nn
import jax

from jaxdrop._layers import draws_key

__all__ = ["RateModule", "StochasticModule", "missing_rng_error"]


def missing_rng_error(layer: str, rng_collection: str, argument: str = "rng") -> flax.errors.InvalidRngError:
  """The error of a layer that is not deterministic and finds no key (the same words for every linen layer;
  ``argument`` is the call's key argument, ``dropout_rng`` for the attention layers)."""
  return flax.errors.InvalidRngError(
      f'{layer} is not deterministic, so it needs a PRNG key from the "{rng_collection}"'
      f" collection, but none was given. Pass one to apply, e.g. model.apply(variables, x,"
      f' rngs={{"{rng_collection}": jax.random.key(0)}}), or pass {argument}= to the layer;'
      f" for evaluation use deterministic=True."
  )


class StochasticModule(nn.Module):
  """Base class: merges ``deterministic`` like ``flax.linen.Dropout`` and finds the key.

  ``deterministic`` may be given to the constructor or at call time, not both.
  When it is false the key comes from the ``rng=`` call argument, else from
  the ``rng_collection`` stream (``rngs={"dropout": key}`` in ``apply``).
  """

  # Keyword-only (KW_ONLY rather than field(kw_only=True), which type checkers do not read through flax's
  # dataclass_transform): subclasses' fields without a default may follow.
  _: dataclasses.KW_ONLY
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  def resolve(self, deterministic: bool | None, rng: jax.Array | None, *rates,
              random: bool | None = None) -> tuple[bool, jax.Array | None]:
    """Returns ``(deterministic, key)``; ``key`` is ``None`` when none is needed.

    ``rates`` are checked drop probabilities; ``random`` (for layers whose
    noise is not set by a rate) says directly whether a key is needed.
    """
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if not draws_key(deterministic, *rates, random=random):
      return bool(deterministic), None
    if rng is not None:
      return False, rng
    # During init, make_rng falls back to the "params" stream, as flax does.
    if self.has_rng(self.rng_collection) or self.is_initializing():
      return False, self.make_rng(self.rng_collection)
    raise missing_rng_error(type(self).__name__, self.rng_collection)


class RateModule(StochasticModule):
  """A layer with one drop ``rate``: one ``__call__`` for all; subclasses define ``_train`` (and ``_eval``).

  Attributes:
    rate: the layer's rate; a call may override it with ``rate=`` (a traced
      scalar is fine, e.g. from a schedule).
  """

  rate: float

  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      rate: float | jax.Array | None = None,
  ):
    """Applies the layer (training unless deterministic); ``rng`` overrides the rng collection."""
    rate = self.rate if rate is None else rate
    deterministic, key = self.resolve(deterministic, rng, rate)
    return self._eval(inputs, rate) if deterministic else self._train(key, inputs, rate)

  def _train(self, key: jax.Array | None, inputs: jax.Array, rate) -> jax.Array:
    raise NotImplementedError

  def _eval(self, inputs: jax.Array, rate) -> jax.Array:
    """Evaluation: the identity, unless a subclass scales."""
    del rate
    return inputs
