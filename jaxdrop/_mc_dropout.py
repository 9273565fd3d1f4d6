"""Monte Carlo dropout: average many stochastic passes (Gal & Ghahramani, 2016)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop._checks import compute_dtype

__all__ = ["MCDropoutPrediction", "mc_dropout"]


class MCDropoutPrediction(NamedTuple):
  """Mean and standard deviation (``ddof=0``) over the stochastic passes."""

  mean: Any
  std: Any


def mc_dropout(
    apply_fn: Callable[..., Any],
    key: jax.Array,
    *args: Any,
    num_samples: int = 30,
    batch_size: int | None = None,
) -> MCDropoutPrediction:
  """Runs ``apply_fn(k, *args)`` for ``num_samples`` keys split from ``key``.

  Dropout seen as an ensemble: each pass samples one sub-network, and their
  mean is the ensemble's prediction while their spread measures the model's
  uncertainty. The passes are vmapped (one compiled program), in chunks of
  ``batch_size`` passes if given, to bound memory. Call it inside your own
  ``jax.jit`` (with ``apply_fn`` closed over) to compile it once.

  Args:
    apply_fn: ``(key, *args) -> pytree of arrays``, running the model with
      dropout active, e.g. ``lambda k, x: model.apply(variables, x,
      deterministic=False, rngs={"dropout": k})``.
    key: a PRNG key; it is split, never reused.
    *args: passed to every call of ``apply_fn``.
    num_samples: number of stochastic passes, at least 1.
    batch_size: passes evaluated together; ``None`` runs all at once.

  Returns:
    :class:`MCDropoutPrediction` with the mean and the standard deviation of
    each output leaf over the passes (computed in at least float32).

  Raises:
    ValueError: if ``num_samples`` or ``batch_size`` is not a positive integer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> x = jnp.ones(1000)
    >>> pred = jaxdrop.mc_dropout(lambda k, x: jaxdrop.dropout(k, x, 0.5),
    ...                           jax.random.key(0), x, num_samples=64)
    >>> bool(jnp.abs(pred.mean - 1).mean() < 0.2), bool(jnp.abs(pred.std - 1).mean() < 0.2)
    (True, True)
  """
  for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
      raise ValueError(f"{name} must be a positive integer, got {name}={value!r}.")
  keys = jax.random.split(key, num_samples)
  sample = lambda k: apply_fn(k, *args)
  if batch_size is None or batch_size >= num_samples:
    outputs = jax.vmap(sample)(keys)
  else:
    outputs = lax.map(sample, keys, batch_size=batch_size)

  outputs = jax.tree.map(lambda y: y.astype(compute_dtype(y.dtype)), outputs)
  return MCDropoutPrediction(
      mean=jax.tree.map(lambda y: jnp.mean(y, axis=0), outputs),
      std=jax.tree.map(lambda y: jnp.std(y, axis=0), outputs),
  )
