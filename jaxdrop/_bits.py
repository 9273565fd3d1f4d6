"""Packed Bernoulli masks: several mask decisions from each 32-bit random word.

``jax.random.bernoulli`` spends one full hash (a 32-bit word) per element.
Here each word is cut into ``32 // bits`` lanes of ``bits`` bits, and a lane is
``True`` when it is below an integer threshold, so a mask costs a half (16-bit
lanes) or a quarter (8-bit lanes) of the random words.

Where the bits come from: the caller's key (any ``jax.random`` key type, typed
or legacy) is consumed once to draw two 32-bit words, the *seed*; the seed is
the key of a Philox-4x32-10 generator, a counter-based generator that is much
cheaper than the default threefry on CPUs. Word ``j`` of the stream is the
hash of the counter ``j``: bitwise ``jax.random.bits(key, (count,))[j]`` for
``key = jax.random.wrap_key_data(seed, impl="philox4x32")``. Both steps are
plain integer arithmetic, so a mask depends on the caller's key alone: it is
the same on CPU, GPU and TPU, and under ``vmap``. Backward passes regenerate a
mask from its seed, which is why the seed (8 bytes) and not the mask is what
they keep.

Layout: for ``n`` elements and ``k`` lanes a word, ``m = ceil(n / k)`` words are
drawn and element ``i`` (row-major) uses lane ``i // m`` of word ``i % m``.

Element indices are ``uint32``, or ``uint64`` for more than ``2**32`` elements;
both widths give the same words for the same elements. Shapes may be symbolic
(``jax.export`` with ``jax.export.symbolic_shape("b, 784")``): sizes, strides
and word counts are then computed in the exported program, with 64-bit indices
unless the shape's constraints prove at most ``2**32`` elements (e.g.
``symbolic_shape("b, 784", constraints=("b <= 65536",))``), so an exported
function draws, for each concrete shape, the mask of that shape.

Partitioning: every element computes its word from its own global index
(``broadcasted_iota`` along each axis), never by reshaping a flat stream, so
XLA's partitioners (Shardy, JAX's default, and GSPMD) split the generator like
any elementwise operation: each device hashes exactly the words of its own
elements, with no communication, and a sharded mask is bitwise the unsharded
one. In a process (group) with several devices, Philox's 32 x 32 -> 64-bit
products are written as ``uint64`` multiplications, because ``lax.mulhi``
(which ``jax.random``'s own Philox uses) cannot be lowered under Shardy in jax
0.10.

A cheaper generator, as an opt-in: a key of :data:`PHILOX7` (``jax.random.key(0,
impl=jaxdrop.PHILOX7)``) is a Philox-4x32 key of 7 rounds, the generator that
FlashAttention's dropout uses, and its masks come from 7-round Philox, each
hash giving four words (word ``j`` is word ``j % 4`` of the hash of ``j // 4``):
its seed is itself a ``PHILOX7`` key, whose type the kernels read when they are
traced. The lanes and partitioning are the same, so its masks are tiled,
sharded and batched exactly as the default's, and :func:`mask_generator` names
them. Elementwise, each element still hashes its own word's counter; the
packed mask of XLA:CPU (:mod:`jaxdrop._packed_mask`) hashes each counter once.

On a one-device process nothing is partitioned, and cheaper forms give the
same bits: the ``m`` words are drawn as one flat stream and reshaped, with
``lax.mulhi`` (both compile faster), and on XLA:CPU outside differentiation
they are computed once into memory (XLA:CPU would otherwise hash a word once
for each of its ``k`` lanes).
"""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from jax import export, lax
from jax.custom_batching import custom_vmap

__all__ = ["MASK_GENERATOR", "MASK_GENERATOR_7", "PHILOX", "PHILOX7", "bernoulli_lanes", "derive_seed",
           "hash_words", "mask_generator", "random_words", "stream_key", "tile_bernoulli", "tile_lanes"]

GENERATOR = "philox4x32"  # the jax.random implementation whose bits the stream reproduces
#: The name and version of what decides the mask bits drawn for a key (the generator, its rounds, the lane
#: layout). Runs record it, and a change to the masks must change it.
MASK_GENERATOR = "philox4x32-10 counter lanes (8/16/32-bit), jaxdrop stream v1"
MASK_GENERATOR_7 = "philox4x32-7 four-word counter lanes (8/16/32-bit), jaxdrop stream v1"  # keys of PHILOX7

_M0, _M1 = np.uint32(0xD2511F53), np.uint32(0xCD9E8D57)  # Philox-4x32 multipliers (Random123)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # Weyl constants that bump the key
_ROUNDS = 10  # of the default generator (read when a mask is traced)
_ROUNDS_7 = 7  # of PHILOX7 keys
_U32 = np.dtype(np.uint32)
_U64 = np.dtype(np.uint64)
_WIDE_ABOVE = 2**32  # masks with more elements than this index them with 64-bit integers


def _wide(enabled: bool):
  """A context in which ``uint64`` values exist (a no-op when not ``enabled`` or already on)."""
  if enabled and not jax.config.read("jax_enable_x64"):
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def _unpartitioned() -> bool:
  """True when no program can be partitioned: one device in the process (group), and one CPU device."""
  if jax.device_count() != 1:
    return False
  try:
    return len(jax.devices("cpu")) == 1  # a GPU machine may simulate several CPU devices beside its GPU
  except RuntimeError:  # no CPU backend (JAX_PLATFORMS names others only)
    return True


def _mulhilo(m: np.uint32, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The low and high 32 bits of the 64-bit product ``m * x``.

  ``lax.mulhi`` where nothing can be partitioned (it compiles faster), else a ``uint64`` product, which
  Shardy lowers; the bits are the same.
  """
  if _unpartitioned():
    return x * m, lax.mulhi(x, jnp.full(jnp.shape(x), m, _U32))
  with _wide(True):
    wide = lax.convert_element_type(x, _U64) * _U64.type(m)
    hi = lax.convert_element_type(lax.shift_right_logical(wide, _U64.type(32)), _U32)
  return x * m, hi


def _philox(k0, k1, x0, x1, x2, x3, rounds: int) -> tuple[jax.Array, ...]:
  """Philox-4x32 of ``rounds`` rounds of the counter ``(x0, x1, x2, x3)`` under the key ``(k0, k1)``.

  With 10 rounds, bitwise ``jax.random``'s ``philox4x32``. Operands are ``uint32`` arrays that
  broadcast together; scalars (zeros, the key) stay scalars as long as they can.
  """
  for rnd in range(rounds):
    if rnd:
      k0, k1 = k0 + _W0, k1 + _W1
    lo0, hi0 = _mulhilo(_M0, x0)
    lo1, hi1 = _mulhilo(_M1, x2)
    x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
  return x0, x1, x2, x3


def _dim(size, dtype) -> jax.Array:
  """A (possibly symbolic) dimension size as an integer scalar of ``dtype``."""
  if not export.is_symbolic_dim(size):
    return dtype.type(size)
  return lax.convert_element_type(jnp.asarray(size), dtype)


def _greater_than_one(size) -> bool:
  """Whether an axis of ``size`` may hold more than one element (a symbolic size may)."""
  return export.is_symbolic_dim(size) or size > 1


def _needs_64_bits(size) -> bool:
  """Whether ``size`` elements may need 64-bit indices: above :data:`_WIDE_ABOVE`, or a symbolic size that
  cannot be proven at most that (``jax.export.symbolic_shape``'s constraints can prove it). Either index width
  gives the same words for the same elements: only the arithmetic that computes them differs."""
  try:
    return bool(size > _WIDE_ABOVE)
  except jax.errors.InconclusiveDimensionOperation:
    return True


def _flat_index(shape: tuple[int, ...], dtype) -> jax.Array:
  """The row-major index of every element of an array of ``shape``, elementwise (partitionable)."""
  index = jnp.zeros((), dtype)
  stride = 1
  for axis in reversed(range(len(shape))):
    if _greater_than_one(shape[axis]):
      index = index + lax.broadcasted_iota(dtype, shape, axis) * _dim(stride, dtype)
    stride *= shape[axis]
  return jnp.broadcast_to(index, shape)


def _counters(shape: tuple[int, ...], lanes_per_word: int):
  """Each element's word counter ``(hi, lo)`` and lane number, in the layout above."""
  size = math.prod(shape)
  wide = _needs_64_bits(size)
  with _wide(wide):
    return _split_index(_flat_index(shape, _U64 if wide else _U32), size, lanes_per_word)


def _split_index(index: jax.Array, size, lanes_per_word: int):
  """The word counter ``(hi, lo)`` and lane number of the elements at the row-major ``index`` (``uint32``, or
  ``uint64`` when :func:`_needs_64_bits`) of a mask of ``size`` elements, in the layout above."""
  count = _words_for(size, lanes_per_word)
  dtype = index.dtype
  lane = jnp.zeros((), dtype)
  for t in range(1, lanes_per_word):
    lane = lane + (index >= _dim(t * count, dtype)).astype(dtype)
  word = index - lane * _dim(count, dtype)
  hi, lo = _word_counter(word)
  return hi, lo, lax.convert_element_type(lane, _U32)


def _word_counter(word: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A word number (``uint32`` or ``uint64``) as the generator's counter ``(hi, lo)``."""
  if word.dtype == _U32:
    return jnp.zeros((), _U32), word
  hi = lax.convert_element_type(lax.shift_right_logical(word, _U64.type(32)), _U32)
  lo = lax.convert_element_type(word & _U64.type(0xFFFFFFFF), _U32)
  return hi, lo


def _is_key(x) -> bool:
  """Whether ``x`` is a typed PRNG key array (a seed of :data:`PHILOX7`), not ``uint32`` words."""
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _seed_words(seed: jax.Array) -> jax.Array:
  """A seed's ``uint32`` words (``(..., 2)``): itself, or a :data:`PHILOX7` seed's key data (of a clone: a
  seed is used again and again, and jax's key-reuse checker would count reading it as consuming it)."""
  return jax.random.key_data(jax.random.clone(seed)) if _is_key(seed) else seed


def _first_word(seed: jax.Array) -> jax.Array:
  """A scalar of the seed, batched or not: the predicate of the conditionals that keep words unfused."""
  return jnp.ravel(_seed_words(seed))[0]


def _unkeyed(gen, seed):
  """``gen`` and its seed, with a :data:`PHILOX7` seed passed as its words and wrapped again inside ``gen``:
  jax's key-reuse checker counts a key that enters a ``custom_vmap`` as consumed, and these seeds are used
  again (in every block of a loop, and by the backward pass)."""
  if not _is_key(seed):
    return gen, seed
  return (lambda words, *rest: gen(jax.random.wrap_key_data(words, impl=PHILOX7), *rest)), _seed_words(seed)


def _hash(seed: jax.Array, hi: jax.Array, lo: jax.Array) -> jax.Array:
  """The stream's word number ``(hi, lo)`` (its high and low 32 bits; elementwise).

  The default stream's word ``j`` is the XOR of the four words of Philox-4x32-10 at the counter ``(0, j, 0,
  0)`` (as ``jax.random``'s ``philox4x32``); a :data:`PHILOX7` stream's word ``j`` is word ``j % 4`` of
  Philox-4x32-7 at the counter ``(0, j // 4, 0, 0)``, so that one hash can give four words
  (:func:`hash_words`).
  """
  if not _is_key(seed):
    outs = hash_words(seed, hi, lo)
    return outs[0] ^ outs[1] ^ outs[2] ^ outs[3]
  two = jnp.uint32(2)
  part = lo & jnp.uint32(3)
  outs = hash_words(seed, hi >> two, (lo >> two) | (hi << jnp.uint32(30)))
  low, high = jnp.where(part == 0, outs[0], outs[1]), jnp.where(part == two, outs[2], outs[3])
  return jnp.where(part < two, low, high)


def hash_words(seed: jax.Array, hi: jax.Array, lo: jax.Array) -> tuple[jax.Array, ...]:
  """The four words of the seed's Philox at the counter ``(hi, lo, 0, 0)`` (elementwise): for a
  :data:`PHILOX7` seed, words ``4q .. 4q + 3`` of its stream for the quad number ``q = (hi, lo)``. The seed's
  type, read when it is traced, gives the rounds: 10 for ``uint32[2]`` words, 7 for a :data:`PHILOX7` key."""
  words, zero = _seed_words(seed), jnp.zeros((), _U32)
  return _philox(words[0], words[1], hi, lo, zero, zero, _ROUNDS_7 if _is_key(seed) else _ROUNDS)


def _words_for(size, lanes_per_word: int):
  """``ceil(size / lanes_per_word)``: the words that ``size`` lanes take (symbolic for a symbolic size)."""
  return -(-size // lanes_per_word)


@functools.partial(jax.jit, static_argnums=1)
def random_words(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``uint32`` words of ``shape``: the stream's word ``i`` at row-major position ``i``.

  For ``uint32`` seeds, bitwise ``jax.random.bits(jax.random.wrap_key_data(seed, impl="philox4x32"),
  shape)``; for a :data:`PHILOX7` seed, its stream (:func:`_hash`). Computed elementwise from each position
  (partitionable).
  """
  hi, lo, _ = _counters(shape, 1)
  return jnp.broadcast_to(_hash(seed, hi, lo), shape)


def derive_seed(key: jax.Array) -> jax.Array:
  """Consumes ``key`` and returns the seed of the mask generator: ``uint32[2]`` words (Philox-4x32-10), or,
  for a key of :data:`PHILOX7`, those words as a ``PHILOX7`` key (Philox-4x32-7)."""
  words = jax.random.bits(key, (2,), jnp.uint32)
  return jax.random.wrap_key_data(words, impl=PHILOX7) if _is_philox7(key) else words


def _is_philox7(key) -> bool:
  return _is_key(key) and jax.random.key_impl(key) == PHILOX7


def stream_key(seed: jax.Array) -> jax.Array:
  """A key whose ``jax.random`` draws come from the seed's generator (noise drawn beside the masks)."""
  return seed if _is_key(seed) else jax.random.wrap_key_data(seed, impl=PHILOX)


def mask_generator(key: jax.Array) -> str:
  """The name of the generator that jaxdrop draws the masks of ``key`` from.

  Args:
    key: a PRNG key, typed or legacy (``uint32[2]``), or a batch of them.

  Returns:
    :data:`MASK_GENERATOR_7` for a key of :data:`PHILOX7`, else :data:`MASK_GENERATOR`.

  Raises:
    TypeError: if ``key`` is not a key.

  Example:
    >>> import jax, jaxdrop
    >>> jaxdrop.mask_generator(jax.random.key(0)) == jaxdrop.MASK_GENERATOR
    True
    >>> jaxdrop.mask_generator(jax.random.key(0, impl=jaxdrop.PHILOX7))
    'philox4x32-7 four-word counter lanes (8/16/32-bit), jaxdrop stream v1'
  """
  dtype = getattr(key, "dtype", None)
  if not (_is_key(key) or (dtype == _U32 and jnp.shape(key)[-1:] == (2,))):
    what = f"an array of {dtype}{jnp.shape(key)}" if dtype is not None else type(key).__name__
    raise TypeError(f"jaxdrop.mask_generator takes a PRNG key, e.g. jax.random.key(0), got {what}.")
  return MASK_GENERATOR_7 if _is_philox7(key) else MASK_GENERATOR


def _materialized_words(seed: jax.Array, count: int) -> jax.Array:
  """Words ``0 .. count - 1`` of the stream, computed once into memory on XLA:CPU.

  XLA:CPU fuses the generator into every consumer of a word, so a word shared
  by ``k`` lanes would be hashed ``k`` times. ``optimization_barrier`` does not
  stop that on CPU; a conditional does. Both branches are the same function, so
  the predicate (any value XLA cannot fold) does not change the result.
  ``custom_vmap`` keeps the predicate a scalar when the seed is batched (a
  batched predicate would turn the conditional into a fusible select).
  """
  gen, seed = _unkeyed(lambda s: random_words(s, (count,)), seed)

  @custom_vmap
  def words(seed):
    return lax.cond(_first_word(seed) != 0, gen, gen, seed)

  @words.def_vmap
  def _words_vmap(axis_size, in_batched, seed):
    del axis_size
    if not in_batched[0]:
      return words(seed), False
    batched_gen = jax.vmap(gen)
    return lax.cond(_first_word(seed) != 0, batched_gen, batched_gen, seed), True

  return words(seed)


def _lanes_flat(seed, shape, bits, materialize: bool):
  """The lanes of ``shape`` from the stream's first ``m`` words, reshaped (one device: nothing to partition).

  On XLA:CPU, with ``materialize``, the words are computed once into memory.
  """
  size, lanes_per_word = math.prod(shape), 32 // bits
  count = _words_for(size, lanes_per_word)
  if lanes_per_word == 1:
    return random_words(seed, shape)
  if materialize:
    words = lax.platform_dependent(seed, cpu=lambda s: _materialized_words(s, count),
                                   default=lambda s: random_words(s, (count,)))
  else:
    words = random_words(seed, (count,))
  shifts = lax.broadcasted_iota(jnp.uint32, (lanes_per_word, count), 0) * jnp.uint32(bits)
  lanes = ((words[None, :] >> shifts) & jnp.uint32(2**bits - 1)).reshape(-1)
  return lanes[:size].reshape(shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _lanes_elementwise(seed, shape, bits):
  """The lanes of ``shape``, each element hashing its own word (partitionable, fusible)."""
  hi, lo, lane = _counters(shape, 32 // bits)
  words = jnp.broadcast_to(_hash(seed, hi, lo), shape)
  if bits == 32:
    return words
  return (words >> (lane * jnp.uint32(bits))) & jnp.uint32(2**bits - 1)


def tile_lanes(seed: jax.Array, shape: tuple, bits: int, starts: tuple,
               tile_shape: tuple[int, ...]) -> jax.Array:
  """The lanes of one tile of the mask of ``shape``: bitwise the lanes :func:`bernoulli_lanes` compares there.

  The tile is the block ``[starts, starts + tile_shape)`` of the mask array of
  ``shape`` (row-major, 1 on broadcast axes). Each element's lane is computed
  from its *global* row-major index in ``shape``, in the layout above, so a
  tiled computation (blockwise attention) regenerates, tile by tile, exactly
  the mask the whole array gets, with nothing stored. Elements of the tile
  past the end of an axis (the padding of a last tile) get the lanes of
  indices past the end, which callers discard.

  Where nothing is partitioned (:func:`_unpartitioned`) and the tile spans the
  leading axes (all but the last two) whole, with ``32 // bits`` dividing their
  product, the ``32 // bits`` elements that share a word are all in the tile
  (they are ``prod(shape[:-2]) // (32 // bits)`` apart along the leading axes):
  each word is then hashed once and cut into its lanes. Otherwise every element
  hashes its own word (elementwise, partitionable). The bits are the same.

  Args:
    seed: ``uint32[2]`` from :func:`derive_seed`.
    shape: the whole mask's shape (static; a symbolic batch size is allowed).
    bits: lane width, 8, 16 or 32.
    starts: the tile's first index along each axis: Python ints or integer scalars (traced in a loop).
    tile_shape: the tile's (static) shape.

  Returns:
    ``uint32`` lanes of ``tile_shape``; compare them with a threshold
    (:func:`jaxdrop._masked.lane_threshold`) for the mask.
  """
  shape, tile_shape = tuple(shape), tuple(tile_shape)
  lanes_per_word = 32 // bits
  size = math.prod(shape)
  wide = _needs_64_bits(size)
  with _wide(wide):
    dtype = _U64 if wide else _U32
    if _shares_words(shape, starts, tile_shape, lanes_per_word):
      return _cut_lanes(_shared_words(seed, shape, bits, starts, tile_shape), bits, tile_shape)
    hi, lo, lane = _split_index(_tile_index(shape, starts, tile_shape, dtype), size, lanes_per_word)
    words = _hash(seed, hi, lo)
    if bits == 32:
      return jnp.broadcast_to(words, tile_shape)
    return jnp.broadcast_to((words >> (lane * jnp.uint32(bits))) & jnp.uint32(2**bits - 1), tile_shape)


def tile_bernoulli(seed: jax.Array, shape: tuple, threshold, bits: int, starts: tuple,
                   tile_shape: tuple[int, ...]) -> jax.Array:
  """The tile ``[starts, starts + tile_shape)`` of ``bernoulli_lanes(seed, shape, threshold, bits)``, bitwise.

  :func:`tile_lanes` compared with ``threshold``. On XLA:CPU the tile is
  computed once into a buffer (``prod(tile_shape)`` bytes) behind a
  conditional, as :func:`_materialized_words` does for whole masks: XLA:CPU
  would otherwise hash each word again inside every consumer of the tile, once
  per lane and once per element it is broadcast to. Where the tile holds all
  the lanes of its words (see :func:`tile_lanes`), the words too are computed
  once, behind a conditional of their own, before they are cut into lanes (in
  one fusion, XLA:CPU would hash each word once per lane).

  Args:
    seed: ``uint32[2]`` from :func:`derive_seed`.
    shape: the whole mask's shape.
    threshold: the lane threshold (a Python int or ``uint32`` scalar).
    bits: lane width, 8, 16 or 32.
    starts: the tile's first index along each axis (ints or integer scalars).
    tile_shape: the tile's shape.

  Returns:
    A boolean array of ``tile_shape``.
  """
  threshold = jnp.asarray(threshold, jnp.uint32)
  starts = tuple(starts)
  dynamic = [a for a, s in enumerate(starts) if not isinstance(s, int)]

  def at(traced):  # the starts, with the traced ones (operands of the conditionals below) in their places
    given = dict(zip(dynamic, traced, strict=True))
    return tuple(given.get(a, s) for a, s in enumerate(starts))

  def gen(seed, threshold, *traced):
    return tile_lanes(seed, shape, bits, at(traced), tile_shape) < threshold

  def words(seed, *traced):
    return _shared_words(seed, shape, bits, at(traced), tile_shape)

  def cut(seed, threshold, *traced):  # the lanes of words computed once, compared
    return _cut_lanes(_computed_once(words, seed, *traced), bits, tile_shape) < threshold

  def gen_cpu(seed, threshold, *traced):
    shared = _shares_words(shape, starts, tile_shape, 32 // bits)
    return _computed_once(cut if shared else gen, seed, threshold, *traced)

  traced = [jnp.asarray(starts[a], jnp.int32) for a in dynamic]
  return lax.platform_dependent(seed, threshold, *traced, cpu=gen_cpu, default=gen)


def _shared_words(seed, shape: tuple, bits: int, starts: tuple, tile_shape: tuple[int, ...]) -> jax.Array:
  """The words a tile's lanes are cut from, when they are all its own (:func:`_shares_words`): word ``w`` of
  the stream at group ``w // (Lq * Lk)`` of ``(prod(shape[:-2]) // (32 // bits), Lq, Lk)``."""
  groups = math.prod(shape[:-2]) // (32 // bits)
  rows = (groups, *shape[-2:])
  wide = _needs_64_bits(math.prod(shape))
  with _wide(wide):
    index = _tile_index(rows, (0, *starts[-2:]), (groups, *tile_shape[-2:]), _U64 if wide else _U32)
    return _hash(seed, *_word_counter(index))


def _cut_lanes(words: jax.Array, bits: int, tile_shape: tuple[int, ...]) -> jax.Array:
  """The lanes of :func:`_shared_words`, lane ``t`` of every word along the leading axes' ``t``-th part."""
  lanes = jnp.stack([(words >> jnp.uint32(t * bits)) & jnp.uint32(2**bits - 1) for t in range(32 // bits)])
  return lanes.reshape(tile_shape)


def _computed_once(gen, *args):
  """``gen(*args)`` computed into a buffer that XLA does not fuse into its consumers (a conditional whose two
  branches are ``gen``; its predicate is a scalar of the seed, ``args[0]``, also under ``vmap``)."""
  gen, seed = _unkeyed(gen, args[0])
  args = (seed, *args[1:])

  @custom_vmap
  def once(*args):
    return lax.cond(_first_word(args[0]) != 0, gen, gen, *args)

  @once.def_vmap
  def _once_vmap(axis_size, in_batched, *args):
    spread = [a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a))) for a, b in zip(args, in_batched,
                                                                                          strict=True)]
    batched = jax.vmap(gen)
    return lax.cond(_first_word(spread[0]) != 0, batched, batched, *spread), True

  return once(*args)


def _shares_words(shape: tuple, starts: tuple, tile_shape: tuple[int, ...], lanes_per_word: int) -> bool:
  """Whether the elements that share each word of a tile's lanes are all in the tile and nothing is
  partitioned (:func:`_unpartitioned`): then each word is hashed once and cut into its lanes
  (:func:`tile_lanes`)."""
  if lanes_per_word == 1 or len(shape) < 3 or not _unpartitioned():
    return False
  lead = shape[:-2]
  if not all(isinstance(n, int) for n in lead) or tuple(tile_shape[:-2]) != tuple(lead):
    return False
  if any(not isinstance(s, int) or s != 0 for s in starts[:-2]):
    return False
  return math.prod(lead) % lanes_per_word == 0


def _tile_index(shape: tuple, starts: tuple, tile_shape: tuple[int, ...], dtype) -> jax.Array:
  """The global row-major index in ``shape`` of each element of the tile ``[starts, starts + tile_shape)``."""
  index = jnp.zeros((), dtype)
  stride = 1
  for axis in reversed(range(len(shape))):
    if _greater_than_one(shape[axis]):
      position = lax.broadcasted_iota(dtype, tile_shape, axis)
      start = starts[axis]
      if not (isinstance(start, int) and start == 0):
        position = position + lax.convert_element_type(start, dtype)
      index = index + position * _dim(stride, dtype)
    stride *= shape[axis]
  return jnp.broadcast_to(index, tile_shape)


def bernoulli_lanes(
    seed: jax.Array, shape: tuple[int, ...], threshold, bits: int, *, materialize: bool = True
) -> jax.Array:
  """A boolean array of ``shape``, each element ``True`` with probability ``threshold / 2**bits``.

  Args:
    seed: ``uint32[2]`` from :func:`derive_seed`.
    shape: the mask's shape.
    threshold: a lane threshold, a Python int or ``uint32`` scalar (from a probability:
      :func:`jaxdrop._masked.lane_threshold`).
    bits: lane width, 8, 16 or 32.
    materialize: on a one-device XLA:CPU process, compute the random words
      once into a temporary buffer (``bits / 8`` bytes per element; faster)
      instead of rehashing a word for each of its lanes inside the consumer
      (no buffer). The bits are the same either way; with several devices
      (where the mask may be partitioned) each element always hashes its own.

  Returns:
    The mask; elements are independent, and bitwise the same for the same seed.
  """
  shape = tuple(shape)
  if math.prod(shape) == 0:
    return jnp.zeros(shape, jnp.bool_)
  if _unpartitioned():
    lanes = _lanes_flat(seed, shape, bits, materialize)
  else:
    lanes = _lanes_elementwise(seed, shape, bits)
  return lanes < jnp.asarray(threshold, jnp.uint32)


def _impl(rounds: int, name: str, tag: str):
  """A ``jax.random`` key implementation of Philox-4x32 with ``rounds`` rounds, written without ``lax.mulhi``
  (it partitions under Shardy); with 10 rounds its draws are bitwise those of ``impl="philox4x32"`` keys."""

  def random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    hi, lo, _ = _counters(shape, 1)
    zero = jnp.zeros((), _U32)
    outs = [jnp.broadcast_to(o, shape) for o in _philox(key[0], key[1], hi, lo, zero, zero, rounds)]
    if bit_width == 64:
      wide = lambda o: lax.convert_element_type(o, _U64)
      return lax.shift_left(wide(outs[0]), _U64.type(32)) | wide(outs[1])
    word = outs[0] ^ outs[1] ^ outs[2] ^ outs[3]
    return word if bit_width == 32 else lax.convert_element_type(word, np.dtype(f"uint{bit_width}"))

  def seed(seed: jax.Array) -> jax.Array:
    return jax.random.key_data(jax.random.key(seed, impl=GENERATOR))  # key creation: never partitioned

  def split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    hi, lo, _ = _counters(shape, 1)
    zero = jnp.zeros((), _U32)
    out0, out1, _, _ = _philox(key[0], key[1], zero, zero, hi, lo, rounds)
    return jnp.stack([jnp.broadcast_to(out0, shape), jnp.broadcast_to(out1, shape)], axis=len(shape))

  def fold_in(key: jax.Array, data) -> jax.Array:
    zero = jnp.zeros((), _U32)
    out0, out1, _, _ = _philox(key[0], key[1], zero, zero, zero, jnp.asarray(data, _U32), rounds)
    return jnp.stack([out0, out1])

  return jax.extend.random.define_prng_impl(key_shape=(2,), seed=seed, split=split, random_bits=random_bits,
                                            fold_in=fold_in, name=name, tag=tag)


#: jax.random's Philox-4x32 written without ``lax.mulhi``, so that it partitions under Shardy: keys of this
#: implementation give bitwise the draws (bits, uniform, normal, ...) of ``impl="philox4x32"`` keys.
PHILOX = _impl(10, "jaxdrop_philox4x32", "jdpx")
#: Philox-4x32 of 7 rounds (FlashAttention's dropout generator): jaxdrop draws the masks of its keys
#: (``jax.random.key(0, impl=jaxdrop.PHILOX7)``) from 7-round Philox, named by :data:`MASK_GENERATOR_7`; its
#: own ``jax.random`` draws (split, fold_in, bits) are 7-round Philox too.
PHILOX7 = _impl(_ROUNDS_7, "jaxdrop_philox4x32_7", "jdp7")
