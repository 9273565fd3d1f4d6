"""Blockwise attention (FlashAttention-2's algorithm in plain JAX) with the reference path's dropout mask.

The attention of ``Lq`` queries over ``Lk`` keys is computed tile by tile:
queries in blocks of ``block_q`` rows, keys in blocks of ``block_k``. For each
query block, a loop over its key blocks keeps the running row maximum ``m``,
the running normalizer ``l`` and the unnormalized output (online softmax);
the forward pass stores only the output and the per-row log-sum-exp
``lse = m + log(l)``. The backward pass is a ``jax.custom_vjp`` that
regenerates each tile's probabilities ``P = exp(S - lse)`` from the queries and
keys (FlashAttention-2's backward): a loop over key blocks, each accumulating
its ``dK`` and ``dV`` over the query blocks that see it, while ``dQ``
accumulates in a buffer of the queries' size, with
``dS = P * (dP - D)`` and ``D = rowsum(dO * O)``. Memory is linear in the
lengths: nothing of size ``Lq x Lk`` exists outside one tile.

Attention dropout multiplies the normalized probabilities of each tile by
``where(keep, 1 / (1 - rate), 0)``, where ``keep`` is the tile of the mask
the reference path draws for the whole ``(batch..., heads, Lq, Lk)`` weights
(or ``(Lq, Lk)`` with ``broadcast_dropout``): :func:`jaxdrop._bits.tile_lanes`
computes each element's lane from its global index, so the mask is the same for
every block size, and the backward pass regenerates it from the seed. With
``D = rowsum(dO * O)`` the dropout needs nothing else in the backward pass:
``rowsum(P * dP~) = rowsum(dO * O)`` also for the dropped ``P``.

DropKey (``drop_key``) acts before the softmax instead: a dropped logit is not
allowed (``-inf``), with the tile of the mask of the same layout drawn from its
own seed, in the forward pass and again in the backward pass's recomputed
logits, so the online softmax normalizes over the kept logits only.

Causal attention loops, for query block ``i``, over the key blocks that hold a
key ``<= `` some query of the block only (a loop bound, no tile of zeros is
computed), and the backward pass over the query blocks at or below each key
block; ``key_value_seq_lengths`` also bounds the loops by the longest length.
Rows with no allowed key give zeros (and zero gradients).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from jaxdrop import _bits

__all__ = ["DropKey", "Dropout", "blockwise_attention"]

_F32 = jnp.float32
_SCORES = "...hgqd,...hkd->...hgqk"
_WEIGHTED = "...hgqk,...hkd->...hgqd"
_BY_KEY = "...hgqk,...hgqd->...hkd"


class Dropout(NamedTuple):
  """The dropout of the probabilities: ``where(lane < threshold, p * scale, fill)``."""

  seed: jax.Array  # uint32[2], the mask generator's seed
  threshold: jax.Array  # uint32 scalar
  scale: jax.Array  # float32 scalar, 1 / keep probability (NaN for an invalid traced rate)
  fill: jax.Array  # float32 scalar, 0 (NaN for an invalid traced rate)


class DropKey(NamedTuple):
  """DropKey on the logits: ``where(lane < threshold, s, -inf)``, the lanes of the dropout's mask layout
  (``_Spec.mask_shape``) from their own seed."""

  seed: jax.Array  # uint32[2]
  threshold: jax.Array  # uint32 scalar: a kept logit's lane is below it


class _Spec(NamedTuple):
  """What the kernel's loops are built from (static)."""

  lq: int  # the query and key lengths, unpadded
  lk: int
  block_q: int
  block_k: int
  causal: bool
  mask_bits: int
  mask_shape: tuple  # the dropout mask's shape: (*batch, kv_heads, groups, lq, lk), 1 on broadcast axes
  tile_shape: tuple  # the mask's shape in one tile
  precision: Any


def blockwise_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
    kv_lengths: jax.Array | None,
    *,
    is_causal: bool,
    dropout: Dropout | None,
    broadcast_dropout: bool,
    mask_bits: int,
    precision: Any,
    block_q: int,
    block_k: int,
    drop_key: DropKey | None = None,
) -> jax.Array:
  """``softmax(q k^T / sqrt(d) + bias, masked) v`` with dropout, blockwise; shapes as the reference path's.

  Args:
    query: ``[batch..., Lq, heads, d]`` (promoted with ``key`` and ``value``).
    key: ``[batch..., Lk, kv_heads, d]``; ``heads`` a multiple of ``kv_heads``.
    value: ``[batch..., Lk, kv_heads, dv]``.
    bias: ``None`` or broadcastable to ``[batch..., heads, Lq, Lk]``.
    mask: ``None`` or boolean, broadcastable like ``bias``.
    kv_lengths: ``None`` or integers broadcastable to ``[batch...]``: keys at or past them are masked.
    is_causal: mask the keys after each query (``k > q``), skipping the tiles that hold only those.
    dropout: the dropout's seed, threshold, scale and fill, or ``None``.
    broadcast_dropout: whether the mask is ``[Lq, Lk]``, shared over the batch and heads.
    mask_bits: the mask's lane width.
    precision: the ``precision`` of every product.
    block_q: query rows per tile (capped at ``Lq``).
    block_k: keys per tile (capped at ``Lk``).
    drop_key: DropKey's seed and threshold, or ``None``: the dropped logits are not allowed (``-inf``),
      with the tiles of the mask of the dropout's layout (the reference path's DropKey mask).

  Returns:
    ``[batch..., Lq, heads, dv]`` in the query's dtype.
  """
  batch = query.shape[:-3]
  lq, heads, depth = query.shape[-3:]
  lk, kv_heads = key.shape[-3], key.shape[-2]
  groups = heads // kv_heads
  bq, bk = max(1, min(block_q, lq)), max(1, min(block_k, lk))
  nq, nk = -(-lq // bq), -(-lk // bk)
  n = len(batch)
  q = query / jnp.sqrt(depth).astype(query.dtype)  # as flax: the scaled query in the input dtype
  q = q.reshape(*batch, lq, kv_heads, groups, depth)
  q = _blocks(q, axis=n, block=bq, count=nq)  # (nq, *batch, bq, kv_heads, groups, d)
  q = jnp.moveaxis(q, 1 + n, -2)  # (nq, *batch, kv_heads, groups, bq, d)
  k = jnp.moveaxis(_blocks(key, axis=n, block=bk, count=nk), 1 + n, -2)  # (nk, *batch, kv_heads, bk, d)
  v = jnp.moveaxis(_blocks(value, axis=n, block=bk, count=nk), 1 + n, -2)
  mask_shape = ((1,) * n + (1, 1, lq, lk)) if broadcast_dropout else (*batch, kv_heads, groups, lq, lk)
  tile_shape = (*mask_shape[:-2], bq, bk)
  spec = _Spec(lq, lk, bq, bk, bool(is_causal), mask_bits, mask_shape, tile_shape, precision)
  bias = _per_tile_layout(bias, n, heads, kv_heads, (nq * bq, nk * bk), 0)
  mask = _per_tile_layout(mask, n, heads, kv_heads, (nq * bq, nk * bk), False)
  if kv_lengths is not None:
    kv_lengths = jnp.minimum(jnp.asarray(kv_lengths).astype(jnp.int32), lk)  # longer: every key
    kv_lengths = kv_lengths.reshape((1,) * (n - kv_lengths.ndim) + kv_lengths.shape + (1, 1, 1, 1))
  # (nq, *batch, kv_heads, groups, bq, dv)
  out = _attend(spec, q, k, v, bias, mask, kv_lengths, dropout, drop_key)
  out = jnp.moveaxis(jnp.moveaxis(out, -2, 1 + n), 0, n)  # (*batch, nq, bq, kv_heads, groups, dv)
  out = out.reshape(*batch, nq * bq, heads, value.shape[-1])
  return lax.slice_in_dim(out, 0, lq, axis=n)


def _blocks(x: jax.Array, *, axis: int, block: int, count: int) -> jax.Array:
  """``x`` padded with zeros along ``axis`` to ``count * block`` and split there into ``(count, block)``, the
  ``count`` axis first."""
  pad = count * block - x.shape[axis]
  if pad:
    x = jnp.pad(x, [(0, pad if a == axis else 0) for a in range(x.ndim)])
  x = x.reshape(*x.shape[:axis], count, block, *x.shape[axis + 1:])
  return jnp.moveaxis(x, axis, 0)


def _per_tile_layout(x, n: int, heads: int, kv_heads: int, padded: tuple[int, int], fill):
  """A bias or mask broadcastable to ``(*batch, heads, Lq, Lk)`` as ``(*batch|1, kv_heads|1, groups|1,
  Lq|1, Lk|1)`` (``n`` batch axes), padded with ``fill`` along the lengths it does not broadcast over."""
  if x is None:
    return None
  x = jnp.asarray(x)
  x = x.reshape((1,) * (n + 3 - x.ndim) + x.shape)
  *lead, h, rows, cols = x.shape
  x = x.reshape(*lead, kv_heads, heads // kv_heads, rows, cols) if h == heads and h > 1 else (
      x.reshape(*lead, 1, 1, rows, cols))
  pads = [(0, 0)] * (x.ndim - 2)
  pads += [(0, padded[0] - rows if rows > 1 else 0), (0, padded[1] - cols if cols > 1 else 0)]
  if any(p for _, p in pads):
    x = jnp.pad(x, pads, constant_values=fill)
  return x


def _tile(x: jax.Array, i, j, spec: _Spec) -> jax.Array:
  """The ``(i, j)`` tile of a bias or mask in :func:`_per_tile_layout` (broadcast axes stay 1)."""
  if x.shape[-2] > 1:
    x = lax.dynamic_slice_in_dim(x, i * spec.block_q, spec.block_q, axis=x.ndim - 2)
  if x.shape[-1] > 1:
    x = lax.dynamic_slice_in_dim(x, j * spec.block_k, spec.block_k, axis=x.ndim - 1)
  return x


def _add_tile(buffer: jax.Array, tile: jax.Array, i, j, spec: _Spec) -> jax.Array:
  """``buffer`` (a bias's gradient) with ``tile`` (summed over the axes ``buffer`` broadcasts) added at
  ``(i, j)``."""
  axes = tuple(a for a in range(tile.ndim) if buffer.shape[a] == 1 and tile.shape[a] > 1)
  tile = jnp.sum(tile, axis=axes, keepdims=True) if axes else tile
  starts = [0] * buffer.ndim
  if buffer.shape[-2] > 1:
    starts[-2] = i * spec.block_q
  if buffer.shape[-1] > 1:
    starts[-1] = j * spec.block_k
  current = lax.dynamic_slice(buffer, starts, tile.shape)
  return lax.dynamic_update_slice(buffer, current + tile, starts)


def _logits(spec: _Spec, q_i, k_j, i, j, bias, mask, lengths, drop_key, *, causal: bool) -> jax.Array:
  """The tile's scaled logits plus bias in float32, ``-inf`` where attention is not allowed (or DropKey drops
  the logit). ``causal``: the tile crosses the diagonal (:func:`_whole_key_blocks`), so its later keys are
  masked."""
  s = jnp.einsum(_SCORES, q_i, k_j, precision=spec.precision, preferred_element_type=_F32)
  if bias is not None:
    s = s + _tile(bias, i, j, spec).astype(_F32)
  lead = (1,) * (s.ndim - 2)
  rows = i * spec.block_q + lax.broadcasted_iota(jnp.int32, (*lead, spec.block_q, 1), s.ndim - 2)
  cols = j * spec.block_k + lax.broadcasted_iota(jnp.int32, (*lead, 1, spec.block_k), s.ndim - 1)
  allowed = None

  def both(a, b):
    return b if a is None else jnp.logical_and(a, b)

  if mask is not None:
    allowed = both(allowed, _tile(mask, i, j, spec))
  if causal:
    allowed = both(allowed, cols <= rows)
  if lengths is not None:
    allowed = both(allowed, cols < lengths)
  elif spec.lk % spec.block_k:  # the padding of the last key block
    allowed = both(allowed, cols < spec.lk)
  if drop_key is not None:
    allowed = both(allowed, _keep(spec, drop_key.seed, drop_key.threshold, i, j))
  if allowed is None:
    return s
  return jnp.where(allowed, s, -jnp.inf)


def _keep(spec: _Spec, seed, threshold, i, j) -> jax.Array:
  """The tile ``(i, j)`` of the reference path's dropout (or DropKey) mask of ``seed`` (``True``: kept)."""
  starts = (0,) * (len(spec.mask_shape) - 2) + (i * spec.block_q, j * spec.block_k)
  return _bits.tile_bernoulli(seed, spec.mask_shape, threshold, spec.mask_bits, starts, spec.tile_shape)


def _max_length(spec: _Spec, lengths) -> jax.Array | None:
  return None if lengths is None else jnp.clip(jnp.max(lengths), 0, spec.lk)


def _key_blocks(spec: _Spec, i, lengths, count: int):
  """The key blocks ``[0, hi)`` that query block ``i`` sees."""
  hi: Any = count
  if spec.causal:  # the last key any of its rows sees is its last row (not the padding past the queries)
    hi = jnp.minimum(count, (jnp.minimum((i + 1) * spec.block_q, spec.lq) - 1) // spec.block_k + 1)
  longest = _max_length(spec, lengths)
  if longest is not None:
    hi = jnp.minimum(hi, (longest + spec.block_k - 1) // spec.block_k)
  return 0, hi


def _whole_key_blocks(spec: _Spec, i):
  """Causal: ``n`` such that every row of query block ``i`` sees every key of key blocks ``[0, n)`` (no mask
  needed there)."""
  return (i * spec.block_q + 1) // spec.block_k


def _first_whole_query_block(spec: _Spec, j):
  """Causal: the first query block whose every row sees every key of key block ``j`` (the later ones too)."""
  return ((j + 1) * spec.block_k - 1 + spec.block_q - 1) // spec.block_q


def _query_blocks(spec: _Spec, j, lengths, count: int):
  """The query blocks ``[lo, count)`` that see key block ``j`` (``lo = count``: none)."""
  lo: Any = 0
  if spec.causal:  # the first row that sees its first key (none when it is past the last query)
    lo = jnp.where(j * spec.block_k < spec.lq, (j * spec.block_k) // spec.block_q, count)
  longest = _max_length(spec, lengths)
  if longest is not None:
    lo = jnp.where(j * spec.block_k >= longest, count, lo)
  return lo, count


def _index(x: jax.Array, i) -> jax.Array:
  return lax.dynamic_index_in_dim(x, i, 0, keepdims=False)


def _forward(spec: _Spec, q, k, v, bias, mask, lengths, dropout, drop_key):
  """Output ``(nq, *batch, kv_heads, groups, bq, dv)`` and log-sum-exp ``(nq, ..., bq)`` (``+inf`` on rows
  with no allowed key)."""
  nk = k.shape[0]
  rows = q.shape[1:-1]

  def query_block(args):
    i, q_i = args

    def step(j, carry, causal=False):
      m, norm, acc = carry
      k_j, v_j = _index(k, j), _index(v, j)
      s = _logits(spec, q_i, k_j, i, j, bias, mask, lengths, drop_key, causal=causal)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # rows with nothing allowed yet: exp(-inf) = 0
      p = jnp.exp(s - shift[..., None])
      alpha = jnp.exp(m - shift)
      norm = alpha * norm + jnp.sum(p, axis=-1)
      if dropout is not None:
        p = jnp.where(_keep(spec, dropout.seed, dropout.threshold, i, j), p * dropout.scale, dropout.fill)
      pv = jnp.einsum(_WEIGHTED, p.astype(v.dtype), v_j, precision=spec.precision,
                      preferred_element_type=_F32)
      return m_new, norm, alpha[..., None] * acc + pv

    init = (jnp.full(rows, -jnp.inf, _F32), jnp.zeros(rows, _F32), jnp.zeros((*rows, v.shape[-1]), _F32))
    lo, hi = _key_blocks(spec, i, lengths, nk)
    if spec.causal:  # the tiles below the diagonal need no mask; then those that cross it
      whole = jnp.clip(_whole_key_blocks(spec, i), lo, hi)
      carry = lax.fori_loop(lo, whole, step, init)
      m, norm, acc = lax.fori_loop(whole, hi, functools.partial(step, causal=True), carry)
    else:
      m, norm, acc = lax.fori_loop(lo, hi, step, init)
    some = norm > 0
    out = acc / jnp.where(some, norm, 1.0)[..., None]
    lse = jnp.where(some, m + jnp.log(jnp.where(some, norm, 1.0)), jnp.inf)
    return out.astype(q.dtype), lse

  return lax.map(query_block, (jnp.arange(q.shape[0], dtype=jnp.int32), q))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(spec: _Spec, q, k, v, bias, mask, lengths, dropout, drop_key):
  return _forward(spec, q, k, v, bias, mask, lengths, dropout, drop_key)[0]


def _attend_fwd(spec: _Spec, *primals):
  """``symbolic_zeros``: the primals come as ``CustomVJPPrimal``; a bias that is not differentiated gets no
  gradient buffer (the residuals say so by their structure: ``()`` or ``None``)."""
  q, k, v, bias, mask, lengths, dropout, drop_key = jax.tree.map(lambda p: p.value, primals,
                                                       is_leaf=lambda p: isinstance(p, CustomVJPPrimal))
  bias_grad = () if bias is not None and primals[3].perturbed else None
  out, lse = _forward(spec, q, k, v, bias, mask, lengths, dropout, drop_key)
  return out, (q, k, v, bias, mask, lengths, dropout, drop_key, out, lse, bias_grad)


def _attend_bwd(spec: _Spec, residuals, g):
  q, k, v, bias, mask, lengths, dropout, drop_key, out, lse, bias_grad = residuals
  if isinstance(g, SymbolicZero):
    return None, None, None, None, None, None, None, None
  nq = q.shape[0]
  delta = jnp.sum(g.astype(_F32) * out.astype(_F32), axis=-1)  # D = rowsum(dO * O)

  def key_block(carry, xs):
    j, k_j, v_j = xs

    def step(i, inner, causal=False):
      dk_j, dv_j, dq, dbias = inner
      q_i, g_i = _index(q, i), _index(g, i)
      s = _logits(spec, q_i, k_j, i, j, bias, mask, lengths, drop_key, causal=causal)
      p = jnp.exp(s - _index(lse, i)[..., None])  # 0 where not allowed, and on rows with nothing allowed
      dp = jnp.einsum(_SCORES, g_i, v_j, precision=spec.precision, preferred_element_type=_F32)
      if dropout is None:
        dropped = p
      else:
        keep = _keep(spec, dropout.seed, dropout.threshold, i, j)
        dropped = jnp.where(keep, p * dropout.scale, dropout.fill)
        dp = jnp.where(keep, dp * dropout.scale, 0.0)
      dv_j = dv_j + jnp.einsum(_BY_KEY, dropped.astype(g.dtype), g_i, precision=spec.precision,
                               preferred_element_type=_F32)
      ds = p * (dp - _index(delta, i)[..., None])
      dk_j = dk_j + jnp.einsum(_BY_KEY, ds.astype(q.dtype), q_i, precision=spec.precision,
                               preferred_element_type=_F32)
      dq_i = jnp.einsum(_WEIGHTED, ds.astype(k.dtype), k_j, precision=spec.precision,
                        preferred_element_type=_F32)
      dq = lax.dynamic_update_index_in_dim(dq, _index(dq, i) + dq_i, i, 0)
      if dbias is not None:
        dbias = _add_tile(dbias, ds, i, j, spec)
      return dk_j, dv_j, dq, dbias

    dq, dbias = carry
    zeros = lambda x: jnp.zeros(x.shape, _F32)
    lo, hi = _query_blocks(spec, j, lengths, nq)
    inner = (zeros(k_j), zeros(v_j), dq, dbias)
    if spec.causal:  # the tiles that cross the diagonal; then those below it, which need no mask
      whole = jnp.clip(_first_whole_query_block(spec, j), lo, hi)
      inner = lax.fori_loop(lo, whole, functools.partial(step, causal=True), inner)
      lo = whole
    dk_j, dv_j, dq, dbias = lax.fori_loop(lo, hi, step, inner)
    return (dq, dbias), (dk_j.astype(k.dtype), dv_j.astype(v.dtype))

  dbias0 = None if bias_grad is None else jnp.zeros(bias.shape, _F32)
  xs = (jnp.arange(k.shape[0], dtype=jnp.int32), k, v)
  (dq, dbias), (dk, dv) = lax.scan(key_block, (jnp.zeros(q.shape, _F32), dbias0), xs)
  dbias = None if bias_grad is None or dbias is None else dbias.astype(bias.dtype)
  return dq.astype(q.dtype), dk, dv, dbias, None, None, None, None


_attend.defvjp(_attend_fwd, _attend_bwd, symbolic_zeros=True)
