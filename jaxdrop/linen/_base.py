"""What every jaxdrop linen layer shares: ``deterministic`` and the dropout key."""

from __future__ import annotations

import dataclasses

import flax.errors
import flax.linen as nn
import jax

from jaxdrop._checks import check_rate


def needs_key(*rates) -> bool:
  """False when every rate is a concrete 0 or 1 (nothing random to draw)."""
  return not all(isinstance(r, (int, float)) and r in (0, 1) for r in rates)


class StochasticModule(nn.Module):
  """Base class: merges ``deterministic`` like ``flax.linen.Dropout`` and finds the key.

  ``deterministic`` may be given to the constructor or at call time, not both.
  When it is false the key comes from the ``rng=`` call argument, else from
  the ``rng_collection`` stream (``rngs={"dropout": key}`` in ``apply``).
  """

  deterministic: bool | None = dataclasses.field(default=None, kw_only=True)
  rng_collection: str = dataclasses.field(default="dropout", kw_only=True)

  def resolve(self, deterministic: bool | None, rng: jax.Array | None, *rates,
              random: bool | None = None) -> tuple[bool, jax.Array | None]:
    """Returns ``(deterministic, key)``; ``key`` is ``None`` when none is needed.

    ``rates`` are checked drop probabilities; ``random`` (for layers whose
    noise is not set by a rate) says directly whether a key is needed.
    """
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    for rate in rates:
      check_rate(rate)
    if deterministic or not (needs_key(*rates) if random is None else random):
      return bool(deterministic), None
    if rng is not None:
      return False, rng
    # During init, make_rng falls back to the "params" stream, as flax does.
    if self.has_rng(self.rng_collection) or self.is_initializing():
      return False, self.make_rng(self.rng_collection)
    name = type(self).__name__
    raise flax.errors.InvalidRngError(
        f'{name} is not deterministic, so it needs a PRNG key from the "{self.rng_collection}"'
        f' collection, but none was given. Pass one to apply, e.g. model.apply(variables, x,'
        f' rngs={{"{self.rng_collection}": jax.random.key(0)}}), or pass rng= to the layer;'
        f" for evaluation use deterministic=True."
    )


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
