"""Embedding (word) dropout: drop whole vocabulary rows (Gal & Ghahramani, 2016; AWD-LSTM's
``embedded_dropout``).

One Bernoulli draw per vocabulary row (per sequence, or one for the batch) decides whether the word's
embedding is kept (scaled by ``1 / (1 - rate)``) or zeroed, for every occurrence of the word. Two paths
give the same values: dropping rows of the matrix and looking the tokens up
(:func:`embedding_matrix_dropout`), or looking the tokens up and gathering the row mask by token id
(:func:`embedding_dropout`, which never forms the dropped matrix). Both draw the mask of shape ``(vocab,)``
(``(batch, vocab)`` per sequence) from jaxdrop's generator: element ``v`` of it is lane ``v`` of the same
stream whichever path reads it, and both compute a kept row as ``row * scale`` in the same dtype, so they
are bitwise equal. Both differentiate with the seed, not the mask, as the only residual of the mask.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _bits, _checks
from jaxdrop._bits import bernoulli_lanes
from jaxdrop._checks import compute_dtype
from jaxdrop._masked import Mode, check_common, dropout_terms, masked_affine

__all__ = ["embedding_dropout", "embedding_matrix_dropout"]


def _check_table(embedding) -> jax.Array:
  embedding = _checks.check_floating(embedding, name="embedding")
  if embedding.ndim != 2:
    raise ValueError(f"embedding must be a (vocab, features) table, got shape {embedding.shape}.")
  return embedding


def _check_ids(ids, vocab: int, per_sequence: bool) -> jax.Array:
  dtype = jnp.result_type(ids) if hasattr(ids, "dtype") else None
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
    got = dtype if dtype is not None else type(ids).__name__
    raise TypeError(f"ids must be an integer array of token ids, got {got}; cast it, e.g."
                    " ids.astype(jnp.int32).")
  if per_sequence and jnp.ndim(ids) == 0:
    raise ValueError("per_sequence=True needs ids with a batch axis (batch, ...), got a scalar id.")
  if _checks.is_concrete(ids) and np.size(ids):
    values = np.asarray(ids)  # read on the host (also while tracing, for ids closed over)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab:
      raise ValueError(f"ids must be in [0, {vocab}) (the embedding's rows), got ids from {low} to {high}.")
  return jnp.asarray(ids)


def _check_flag(name: str, value) -> bool:
  if not isinstance(value, bool):
    raise TypeError(f"{name} must be True or False, got {name}={value!r}.")
  return value


def _row_mask(seed, threshold, ids, vocab: int, bits: int, per_sequence: bool, materialize: bool = True):
  """The vocabulary mask gathered at ``ids``: ``mask[ids]`` (``mask[b, ids[b]]`` per sequence), plus a feature
  axis."""
  shape = (ids.shape[0], vocab) if per_sequence else (vocab,)
  mask = bernoulli_lanes(seed, shape, threshold, bits, materialize=materialize)
  if per_sequence:
    flat = ids.reshape(ids.shape[0], -1)
    gathered = jnp.take_along_axis(mask, flat, axis=1, mode="clip").reshape(ids.shape)
  else:
    gathered = jnp.take(mask, ids, mode="clip")
  return gathered[..., None]


def _scaled(rows, scale):
  """``rows * scale`` in the compute dtype, as :func:`jaxdrop._masked.masked_affine` computes a kept one."""
  return (rows.astype(compute_dtype(rows.dtype)) * scale.astype(compute_dtype(rows.dtype))).astype(rows.dtype)


def _fill(fill, dtype):
  return jnp.zeros((), dtype) if fill is None else fill.astype(dtype)


def gathered_dropout_stored(seed, rows, threshold, scale, fill, ids, *, vocab, bits, per_sequence,
                            materialize=True):
  """``where(mask[ids], rows * scale, fill)``, differentiated by plain autodiff (for tests)."""
  mask = _row_mask(seed, threshold, ids, vocab, bits, per_sequence, materialize)
  return jnp.where(jnp.broadcast_to(mask, rows.shape), _scaled(rows, scale), _fill(fill, rows.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7, 8))
def _gathered_dropout(seed, rows, threshold, scale, fill, ids, vocab, bits, per_sequence):
  return gathered_dropout_stored(seed, rows, threshold, scale, fill, ids, vocab=vocab, bits=bits,
                                 per_sequence=per_sequence)


@_gathered_dropout.defjvp
def _gathered_dropout_jvp(vocab, bits, per_sequence, primals, tangents):
  seed, rows, threshold, scale, fill, ids = primals
  y = gathered_dropout_stored(seed, rows, threshold, scale, fill, ids, vocab=vocab, bits=bits,
                              per_sequence=per_sequence, materialize=False)
  return y, _gathered_tangent(seed, threshold, scale, ids, tangents[1], vocab, bits, per_sequence)


@functools.partial(jax.checkpoint, static_argnums=(5, 6, 7), prevent_cse=False,
                   policy=jax.checkpoint_policies.nothing_saveable)
def _gathered_tangent(seed, threshold, scale, ids, t, vocab, bits, per_sequence):
  """The tangent, rematerialized: linearization keeps ``(seed, threshold, scale, ids)``, not the mask (as
  :func:`jaxdrop._masked.masked_affine`'s)."""
  return _gathered_linear(seed, threshold, scale, ids, t, vocab, bits, per_sequence)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6, 7))
def _gathered_linear(seed, threshold, scale, ids, t, vocab, bits, per_sequence):
  """``where(mask[ids], t * scale, 0)``: linear in ``t``; a ``custom_jvp`` so that partial evaluation stages
  it whole (see :mod:`jaxdrop._masked`)."""
  mask = _row_mask(seed, threshold, ids, vocab, bits, per_sequence, materialize=False)
  return jnp.where(jnp.broadcast_to(mask, t.shape), _scaled(t, scale), jnp.zeros((), t.dtype))


@_gathered_linear.defjvp
def _gathered_linear_jvp(vocab, bits, per_sequence, primals, tangents):
  seed, threshold, scale, ids, t = primals
  return (_gathered_linear(seed, threshold, scale, ids, t, vocab, bits, per_sequence),
          _gathered_linear(seed, threshold, scale, ids, tangents[4], vocab, bits, per_sequence))


def embedding_dropout(
    key: jax.Array | None,
    embedding: jax.Array,
    ids: jax.Array,
    rate: float | jax.Array,
    *,
    per_sequence: bool = False,
    mode: Mode = "inverted",
    mask_bits: int = 16,
) -> jax.Array:
  """Looks ``ids`` up in ``embedding`` with whole vocabulary rows dropped (embedding, or word, dropout).

  Gal & Ghahramani (2016), "A Theoretically Grounded Application of Dropout
  in Recurrent Neural Networks", section 4.2, and AWD-LSTM's
  ``embedded_dropout``: each word of the vocabulary is dropped with
  probability ``rate``, and a dropped word's embedding is zero at every one of
  its occurrences; kept rows are scaled by ``1 / (1 - rate)`` (inverted mode).
  By default one mask of shape ``(vocab,)`` serves the whole call (AWD-LSTM's
  batch-wide mask); ``per_sequence=True`` draws one mask ``(batch, vocab)`` per
  sequence (row of ``ids`` along axis 0), Gal & Ghahramani's.

  This path gathers the mask at the token ids instead of masking the table:
  it costs a lookup of ``vocab`` (or ``batch * vocab``) mask bits, and gives,
  bitwise, ``embedding_matrix_dropout(key, embedding, rate)[ids]`` (see
  :func:`embedding_matrix_dropout`: the same key gives the same mask). The
  backward pass regenerates the mask from the key's seed.

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    embedding: a floating-point ``(vocab, features)`` table.
    ids: integer token ids in ``[0, vocab)``, any shape (``(batch, ...)`` with
      ``per_sequence``); concrete ids are checked, traced ones are clipped.
    rate: the probability of dropping a word, in ``[0, 1]`` (a traced scalar
      works; an invalid one gives NaNs).
    per_sequence: one mask per sequence (axis 0 of ``ids``) instead of one for
      the call.
    mode: ``"inverted"`` (scale kept rows while training) or ``"classic"``
      (scale by the keep probability at evaluation, :func:`jaxdrop.dropout_eval`).
    mask_bits: 16 (default), 8 or 32 random bits per word decision.

  Returns:
    ``ids.shape + (features,)`` embeddings, in the table's dtype.

  Raises:
    ValueError: for a bad rate, a table that is not 2-D, ids outside
      ``[0, vocab)``, a missing key, or ``per_sequence`` with a scalar id.
    TypeError: if the table is not floating or ``ids`` not integer.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> table = jnp.ones((10, 4))
    >>> ids = jnp.array([[3, 3, 5, 3]])
    >>> y = jaxdrop.embedding_dropout(jax.random.key(0), table, ids, 0.5)
    >>> bool((y[0, 0] == y[0, 1]).all() and (y[0, 0] == y[0, 3]).all())   # word 3 everywhere alike
    True
  """
  embedding, rate = check_common(embedding, rate, mode, mask_bits)
  embedding = _check_table(embedding)
  per_sequence = _check_flag("per_sequence", per_sequence)
  vocab = embedding.shape[0]
  ids = _check_ids(ids, vocab, per_sequence)
  rows = jnp.take(embedding, ids, axis=0, mode="clip")
  if isinstance(rate, float):
    if rate == 0.0:
      return rows
    if rate == 1.0:
      return jnp.zeros_like(rows)
  seed = _bits.derive_seed(_checks.check_key(key, fn="jaxdrop.embedding_dropout"))
  threshold, scale, fill = dropout_terms(rate, mode, mask_bits)
  threshold = jnp.asarray(np.uint32(threshold) if isinstance(threshold, int) else threshold, jnp.uint32)
  return _gathered_dropout(seed, rows, threshold, scale, fill, ids, vocab, mask_bits, per_sequence)


def embedding_matrix_dropout(
    key: jax.Array | None,
    embedding: jax.Array,
    rate: float | jax.Array,
    *,
    batch_size: int | None = None,
    mode: Mode = "inverted",
    mask_bits: int = 16,
) -> jax.Array:
  """The embedding table with whole rows (words) dropped: AWD-LSTM's ``masked_embed_weight``.

  Each row is zeroed with probability ``rate`` and kept rows are scaled by
  ``1 / (1 - rate)``; look tokens up in the result (``table[ids]``). With
  ``batch_size`` the result is one table per sequence, ``(batch_size, vocab,
  features)``. For the same key, ``embedding_matrix_dropout(key, table,
  rate)[ids]`` is bitwise :func:`embedding_dropout(key, table, ids, rate)
  <embedding_dropout>`, and ``embedding_matrix_dropout(key, table, rate,
  batch_size=b)[i][ids[i]]`` is ``embedding_dropout(..., per_sequence=True)[i]``;
  :func:`embedding_dropout` is the cheaper path when only the looked-up
  tokens are needed.

  Args:
    key: a PRNG key; may be ``None`` only when ``rate`` is 0 or 1.
    embedding: a floating-point ``(vocab, features)`` table.
    rate: the probability of dropping a row, in ``[0, 1]``.
    batch_size: ``None`` (one mask) or the number of sequences, each with its
      own mask.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: 16 (default), 8 or 32.

  Returns:
    The dropped table, ``(vocab, features)`` or ``(batch_size, vocab, features)``.

  Raises:
    ValueError: for a bad rate, a table that is not 2-D, a ``batch_size`` that
      is not a positive int, or a missing key.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> table = jaxdrop.embedding_matrix_dropout(jax.random.key(0), jnp.ones((6, 3)), 0.5)
    >>> [float(row[0]) for row in table]          # each row all kept (x 2) or all dropped
    [2.0, 0.0, 2.0, 2.0, 0.0, 2.0]
  """
  embedding, rate = check_common(embedding, rate, mode, mask_bits)
  embedding = _check_table(embedding)
  if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                 or batch_size < 1):
    raise ValueError(f"batch_size must be None or a positive int (one mask per sequence), got"
                     f" batch_size={batch_size!r}.")
  table = embedding if batch_size is None else jnp.broadcast_to(embedding, (batch_size, *embedding.shape))
  if isinstance(rate, float):
    if rate == 0.0:
      return table
    if rate == 1.0:
      return jnp.zeros_like(table)
  seed = _bits.derive_seed(_checks.check_key(key, fn="jaxdrop.embedding_matrix_dropout"))
  threshold, scale, fill = dropout_terms(rate, mode, mask_bits)
  # (vocab, 1) holds the lanes of (vocab,) (and (batch, vocab, 1) those of (batch, vocab)): the same
  # row-major indices and element count, so the same bits as embedding_dropout's mask.
  mask_shape = (*table.shape[:-1], 1)
  return masked_affine(seed, table, threshold, scale, None, fill, mask_shape=mask_shape, bits=mask_bits)
