"""Packed Bernoulli masks: several mask decisions from each 32-bit random word.

``jax.random.bernoulli`` spends one full hash (a 32-bit word) per element.
Here each word is cut into ``32 // bits`` lanes of ``bits`` bits, and a lane is
``True`` when it is below an integer threshold, so a mask costs a half (16-bit
lanes) or a quarter (8-bit lanes) of the random words.

Where the bits come from: the caller's key (any ``jax.random`` key type, typed
or legacy) is consumed once to draw two 32-bit words, the *seed*; the seed is
the key of a Philox-4x32-10 generator (``jax.random`` with
``impl="philox4x32"``), a counter-based generator that is much cheaper than
the default threefry on CPUs. Both steps are plain integer arithmetic, so a
mask depends on the caller's key alone: it is the same on CPU, GPU and TPU,
and under ``vmap``. Backward passes regenerate a mask from its seed, which is
why the seed (8 bytes) and not the mask is what they keep.

Layout: for ``n`` elements and ``k`` lanes a word, ``m = ceil(n / k)`` words are
drawn and element ``i`` (row-major) uses lane ``i // m`` of word ``i % m``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

__all__ = ["bernoulli_lanes", "derive_seed", "lane_threshold", "realized_probability"]

GENERATOR = "philox4x32"


def derive_seed(key: jax.Array) -> jax.Array:
  """Consumes ``key`` and returns the ``uint32[2]`` seed of the mask generator."""
  return jax.random.bits(key, (2,), jnp.uint32)


def _philox_words(seed: jax.Array, count: int) -> jax.Array:
  return jax.random.bits(jax.random.wrap_key_data(seed, impl=GENERATOR), (count,), jnp.uint32)


def _materialized_words(seed: jax.Array, count: int) -> jax.Array:
  """Same words as :func:`_philox_words`, computed once into memory on XLA:CPU.

  XLA:CPU fuses the generator into every consumer of a word, so a word shared
  by ``k`` lanes would be hashed ``k`` times. ``optimization_barrier`` does not
  stop that on CPU; a conditional does. Both branches are the same function, so
  the predicate (any value XLA cannot fold) does not change the result.
  ``custom_vmap`` keeps the predicate a scalar when the seed is batched (a
  batched predicate would turn the conditional into a fusible select).
  """
  gen = lambda s: _philox_words(s, count)

  @custom_vmap
  def words(seed):
    return lax.cond(seed[0] != 0, gen, gen, seed)

  @words.def_vmap
  def _words_vmap(axis_size, in_batched, seed):
    del axis_size
    if not in_batched[0]:
      return words(seed), False
    batched_gen = jax.vmap(gen)
    return lax.cond(seed[0, 0] != 0, batched_gen, batched_gen, seed), True

  return words(seed)


def _random_words(seed: jax.Array, count: int, shared: bool) -> jax.Array:
  if not shared:
    return _philox_words(seed, count)
  return lax.platform_dependent(
      seed,
      cpu=lambda s: _materialized_words(s, count),
      default=lambda s: _philox_words(s, count),
  )


def lane_threshold(prob, bits: int):
  """The integer threshold ``t`` such that a ``bits``-bit lane is below it with probability ≈ ``prob``.

  Args:
    prob: a Python float, or a traced float scalar, in ``[0, 1]``.
    bits: lane width, 8, 16 or 32.

  Returns:
    ``round(prob * 2**bits)`` as a Python int (concrete ``prob``) or a
    ``uint32`` scalar (traced). For 32-bit lanes it is capped at ``2**32 - 1``
    (a probability 1 then misses by ``2**-32``; callers short-cut ``prob == 1``).
  """
  top = 2**bits if bits < 32 else 2**32 - 1
  if isinstance(prob, (int, float)):
    return min(max(round(prob * 2**bits), 0), top)
  # float32 cannot hold 2**32 - 1; its largest value below 2**32 is 2**32 - 256.
  top_f = float(top) if bits < 32 else 4294967040.0
  scaled = jnp.round(jnp.asarray(prob, jnp.float32) * jnp.float32(2.0**bits))
  return jnp.clip(scaled, 0.0, top_f).astype(jnp.uint32)


def realized_probability(threshold, bits: int):
  """The exact probability that a lane is below ``threshold``."""
  if isinstance(threshold, int):
    return threshold / 2**bits
  return threshold.astype(jnp.float32) / jnp.float32(2.0**bits)


def bernoulli_lanes(
    seed: jax.Array, shape: tuple[int, ...], threshold, bits: int, *, materialize: bool = True
) -> jax.Array:
  """A boolean array of ``shape``, each element ``True`` with probability ``threshold / 2**bits``.

  Args:
    seed: ``uint32[2]`` from :func:`derive_seed`.
    shape: the mask's shape.
    threshold: from :func:`lane_threshold` (Python int or ``uint32`` scalar).
    bits: lane width, 8, 16 or 32.
    materialize: on XLA:CPU, compute the random words once into a temporary
      buffer (``bits / 8`` bytes per element; faster) instead of rehashing a
      word for each of its lanes inside the consumer (no buffer). The bits are
      the same either way.

  Returns:
    The mask; elements are independent, and bitwise the same for the same seed.
  """
  size = math.prod(shape)
  if size == 0:
    return jnp.zeros(shape, jnp.bool_)
  lanes_per_word = 32 // bits
  count = -(-size // lanes_per_word)
  words = _random_words(seed, count, shared=materialize and lanes_per_word > 1)
  if lanes_per_word == 1:
    lanes = words
  else:
    shifts = lax.broadcasted_iota(jnp.uint32, (lanes_per_word, count), 0) * jnp.uint32(bits)
    lanes = (words[None, :] >> shifts) & jnp.uint32(2**bits - 1)
  flat = (lanes < jnp.asarray(threshold, jnp.uint32)).reshape(-1)
  if flat.shape[0] != size:
    flat = flat[:size]
  return flat.reshape(shape)
