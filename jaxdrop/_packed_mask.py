"""A mask packed to one bit per element: the residual that lets a backward pass on XLA:CPU skip the hash.

Under differentiation, the mask kernel (:mod:`jaxdrop._masked`) keeps only the
generator's seed and rehashes the words in the backward pass. On XLA:CPU the
hash is most of dropout's cost, and XLA:CPU hashes a word once for each lane
that reads it. There the kernel keeps the mask instead, packed to one bit per
element (``n / 8`` bytes, 1/32 of a float32 activation): the forward pass
hashes each word once, writes the packed bits and applies them; the backward
pass only unpacks them.

Layout: byte ``b`` holds the mask of elements ``8b .. 8b + 7`` (row-major),
element ``8b + r`` in bit ``r``, so unpacking is a broadcast and a shift, at
the speed of a copy. With ``k = 32 // bits`` lanes a word, element ``i`` reads
lane ``i // m`` of word ``i % m`` (``m = n / k``, :mod:`jaxdrop._bits`): the
``k`` lanes of words ``8c .. 8c + 7`` give byte ``c`` of each of the ``k``
parts of the mask, computed by one reduction with ``k`` outputs, which reads
each word once. For a :data:`jaxdrop.PHILOX7` seed, words ``8c .. 8c + 7`` are
the four words of each of two hashes (:func:`jaxdrop._bits.hash_words`), so
the reduction runs over those two and each hash is computed once for its four
words. The bits are those of :func:`jaxdrop._bits.bernoulli_lanes`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxdrop import _bits

__all__ = ["pack_mask", "packable", "unpack_mask"]


def packable(shape: tuple, bits: int) -> bool:
  """Whether a mask of ``shape`` can be packed: concrete sizes, ``8 * (32 // bits)`` dividing its element
  count, and one device (the packed layout follows the flat stream, which is not partitioned)."""
  if not all(isinstance(n, int) for n in shape):
    return False
  size = math.prod(shape)
  return size > 0 and size % (8 * (32 // bits)) == 0 and _bits._unpartitioned()


def pack_mask(seed: jax.Array, shape: tuple, threshold, bits: int) -> jax.Array:
  """The mask ``bernoulli_lanes(seed, shape, threshold, bits)`` packed to ``uint8[size // 8]``.

  Args:
    seed: from :func:`jaxdrop._bits.derive_seed` (``uint32[2]``, or a :data:`jaxdrop.PHILOX7` key).
    shape: the mask's shape (:func:`packable`).
    threshold: the lane threshold (a Python int or ``uint32`` scalar).
    bits: lane width, 8, 16 or 32.

  Returns:
    ``uint8[prod(shape) // 8]``: bit ``r`` of byte ``b`` is the mask of element ``8b + r``.
  """
  lanes_per_word = 32 // bits
  count = math.prod(shape) // lanes_per_word
  threshold = jnp.asarray(threshold, jnp.uint32)
  kept = lambda word, lane: (_lane(word, lane, bits) < threshold).astype(jnp.uint32)
  if _bits._is_key(seed):  # byte c: the hashes of quads 2c and 2c + 1, four words each, in bits 4h .. 4h + 3
    quads = _quads(seed, count // 8)
    nibbles = [functools.reduce(lax.bitwise_or, [kept(quads[j], lane) << jnp.uint32(j) for j in range(4)])
               for lane in range(lanes_per_word)]
    parts = [n << (lax.broadcasted_iota(jnp.uint32, n.shape, 1) * jnp.uint32(4)) for n in nibbles]
  else:
    words = _bits.random_words(seed, (count,)).reshape(count // 8, 8)
    position = lax.broadcasted_iota(jnp.uint32, words.shape, 1)
    parts = [kept(words, lane) << position for lane in range(lanes_per_word)]
  zeros = tuple(jnp.zeros((), jnp.uint32) for _ in parts)
  packed = lax.reduce(tuple(parts), zeros, lambda a, b: tuple(x | y for x, y in zip(a, b, strict=True)), (1,))
  return jnp.concatenate([p.astype(jnp.uint8) for p in packed])


def _lane(word: jax.Array, lane: int, bits: int) -> jax.Array:
  """Lane ``lane`` (of ``bits`` bits) of ``uint32`` words."""
  return word if bits == 32 else (word >> jnp.uint32(lane * bits)) & jnp.uint32(2**bits - 1)


def _quads(seed: jax.Array, groups: int) -> tuple[jax.Array, ...]:
  """The four words of quad ``2c + h`` of a :data:`jaxdrop.PHILOX7` stream at ``(c, h)`` of ``(groups, 2)``
  (quad numbers in ``uint32``, or ``uint64`` past ``2**32`` quads)."""
  wide = 2 * groups > 2**32
  with _bits._wide(wide):
    dtype = jnp.uint64 if wide else jnp.uint32
    quad = (lax.broadcasted_iota(dtype, (groups, 2), 0) * jnp.asarray(2, dtype)
            + lax.broadcasted_iota(dtype, (groups, 2), 1))
    return _bits.hash_words(seed, *_bits._word_counter(quad))


def unpack_mask(packed: jax.Array, shape: tuple) -> jax.Array:
  """The boolean mask of ``shape`` that :func:`pack_mask` packed."""
  position = lax.broadcasted_iota(jnp.uint32, (packed.shape[0], 8), 1)
  kept = (packed.astype(jnp.uint32)[:, None] >> position) & jnp.uint32(1)
  return kept.astype(jnp.bool_).reshape(shape)
