"""Attention dropout that stores no mask, at any sequence length: a drop-in ``attention_fn`` for Flax.

In a transformer the largest dropout masks are on the attention weights
(``batch x heads x L x L``). ``flax.linen.dot_product_attention`` keeps a
float multiplier of that size for the backward pass, and the dropped weights
besides. Here the dropout mask is a pure function of the key and each
weight's index, so nothing of it is stored. Two implementations compute the
same function (to float rounding) with the same mask bits:

- ``"reference"``: Flax's own weights, then :func:`jaxdrop.dropout` (whose
  backward pass regenerates the mask from an 8-byte seed) and a
  rematerialized weighted sum, so a training step keeps only what the same
  step without dropout keeps: the softmax output and the values (memory in
  ``L x L``).
- ``"blockwise"``: FlashAttention-2's algorithm in plain JAX (online softmax
  over tiles; the backward pass recomputes the tiles), the dropout applied to
  each tile with that tile of the reference mask (memory linear in ``L``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx.nn.attention import dot_product_attention_weights as nnx_attention_weights
from jax import export

from jaxdrop import _bits, _checks, _flash
from jaxdrop._drop_key import drop_key_bias, drop_key_rates, drop_key_terms
from jaxdrop._masked import dropout_terms, seeded_dropout

__all__ = ["BLOCKWISE_ABOVE", "DEFAULT_BLOCK_K", "DEFAULT_BLOCK_Q", "Implementation", "choose_implementation",
           "dot_product_attention", "drop_key_rates"]

_WEIGHTED_SUM = "...hqk,...khd->...qhd"

#: The values of ``implementation`` besides ``None`` (:func:`dot_product_attention`).
Implementation = Literal["reference", "blockwise"]
#: ``implementation=None`` takes the blockwise path when one example's attention weights (``heads x q_length x
#: kv_length`` float32 values) would take more than this many bytes (16 MiB: 8 heads at length 724).
BLOCKWISE_ABOVE = 16 * 2**20
#: The default query rows of a tile of the blockwise path (``block_q=None``).
DEFAULT_BLOCK_Q = 512
#: The default keys of a tile of the blockwise path (``block_k=None``).
DEFAULT_BLOCK_K = 256


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float | jax.Array = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    module=None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
    attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
    is_causal: bool = False,
    *,
    mask_bits: int = 16,
    key_value_seq_lengths: jax.Array | None = None,
    implementation: Implementation | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    drop_key_rate: float | jax.Array = 0.0,
    drop_key_rng: jax.Array | None = None,
    drop_key_deterministic: bool | None = None,
) -> jax.Array:
  """``flax.linen.dot_product_attention`` with key-only attention dropout, at any sequence length.

  Same signature, same weights and same result at evaluation (on the reference
  path the weights are Flax's own :func:`flax.linen.dot_product_attention_weights`;
  only a row with no allowed key differs: zeros here, Flax's uniform weights there);
  pass it as ``attention_fn`` to ``flax.linen.MultiHeadDotProductAttention`` or
  ``flax.nnx.MultiHeadAttention`` (or use :class:`jaxdrop.linen.MultiHeadDotProductAttention`
  and :class:`jaxdrop.nnx.MultiHeadAttention`, which do). While training, the
  attention weights go through inverted dropout (unbiased: ``E[output]`` is the
  output without dropout); its mask is drawn from ``dropout_rng`` and never
  stored: the backward pass regenerates it.

  Two implementations give the same result to float rounding, with *the same
  mask bits* for the same ``dropout_rng``, ``broadcast_dropout`` and
  ``mask_bits`` (whatever the block sizes):

  - ``"reference"`` computes the ``[batch..., heads, q_length, kv_length]``
    weights (Flax's), drops them and takes the weighted sum over the values
    (rematerialized in the backward pass): memory in ``q_length x kv_length``.
  - ``"blockwise"`` is FlashAttention-2's algorithm: queries in blocks of
    ``block_q`` rows, keys in blocks of ``block_k``, an online softmax over the
    key blocks, a backward pass (``jax.custom_vjp``) that recomputes each tile
    from the output and the per-row log-sum-exp; each tile of probabilities is
    dropped with its tile of the reference path's mask. Memory is linear in the
    lengths; with ``is_causal`` the tiles above the diagonal are not computed.
    It does not sow weights (``module``), takes no custom einsums or
    ``dot_general`` and supports reverse-mode differentiation only (no ``jvp``).
  - ``None`` (the default) takes ``"blockwise"`` where one example's weights
    (``heads x q_length x kv_length`` float32 values) would take more than
    :data:`BLOCKWISE_ABOVE` bytes (16 MiB: 8 heads at length 724), unless an
    argument only the reference path supports is given (``module``,
    ``einsum_dot_general``, ``qk_attn_weights_einsum``, a symbolic length); else
    ``"reference"`` (see :func:`choose_implementation`).

  Args:
    query: ``[batch..., q_length, num_heads, depth]``.
    key: ``[batch..., kv_length, num_kv_heads, depth]``; ``num_heads`` must be a
      multiple of ``num_kv_heads`` (grouped-query attention, multi-query with 1).
    value: ``[batch..., kv_length, num_kv_heads, v_depth]``.
    bias: added to the logits; broadcastable to ``[batch..., num_heads, q_length, kv_length]``.
    mask: ``False`` where attention is not allowed; broadcastable like ``bias``.
    broadcast_dropout: share one mask across the batch and head axes (Flax's
      default), or draw one mask per example and head (``False``).
    dropout_rng: the PRNG key of the mask, needed when dropout is active.
    dropout_rate: drop probability of each attention weight (not the keep
      probability); a Python float or a traced scalar (a schedule).
    deterministic: no dropout (evaluation).
    dtype: the computation dtype (default: from the inputs).
    precision: precision of the products.
    module: a Flax module to sow the (pre-dropout) weights into, as Flax does (reference path only).
    force_fp32_for_softmax: compute the softmax in float32 (the blockwise path always does).
    einsum_dot_general: the ``dot_general`` of both einsums (reference path only).
    qk_attn_weights_einsum: the einsum of the logits (with the next, e.g. AQT's; reference path only).
    attn_weights_value_einsum: the einsum of the weighted sum over the values (reference path only).
    is_causal: add a causal mask (``flax.nnx``'s argument): query ``i`` sees keys ``<= i``.
    mask_bits: precision of the dropout mask, as in :func:`jaxdrop.dropout`.
    key_value_seq_lengths: integers broadcastable to ``[batch...]`` (``jax.nn.dot_product_attention``'s
      argument): the keys at positions ``>=`` the length are masked, with no ``L x L`` array.
    implementation: ``"reference"``, ``"blockwise"`` or ``None`` (choose, as above).
    block_q: query rows of a blockwise tile (default :data:`DEFAULT_BLOCK_Q`, capped at ``q_length``).
    block_k: keys of a blockwise tile (default :data:`DEFAULT_BLOCK_K`, capped at ``kv_length``).
    drop_key_rate: DropKey (Li et al., 2023): the probability of dropping each attention *logit* before the
      softmax (a Python float or a traced scalar; per layer, see :func:`drop_key_rates`). A dropped logit is
      ``-inf`` (the paper adds ``-1e12``), so each row's weights are the softmax over its kept logits, not
      rescaled; the mask follows ``broadcast_dropout`` and ``mask_bits`` as the attention dropout does and is
      the same on both paths (regenerated from the seed in the backward pass). A row whose allowed keys
      are all dropped (probability ``drop_key_rate ** n`` for ``n`` allowed keys) is zeros, with zero
      gradients, as a fully masked row is (the paper's ``-1e12`` would give it the undropped weights instead).
    drop_key_rng: the PRNG key of the DropKey mask (default: ``dropout_rng``, split in two, attention dropout
      and DropKey, when both are active).
    drop_key_deterministic: no DropKey; ``None`` (the default) follows ``deterministic``. (The jaxdrop layers
      set it, since Flax passes ``deterministic=True`` when their ``dropout_rate`` is 0.)

  Returns:
    ``[batch..., q_length, num_heads, v_depth]``. Rows with no allowed key (by
    ``mask``, ``is_causal``, ``key_value_seq_lengths`` or DropKey) are zeros, with zero
    gradients, on both paths.

  Raises:
    ValueError: for an unknown ``implementation``, an argument the blockwise
      path does not take with ``implementation="blockwise"``, heads that do not
      group, non-positive block sizes, or lengths that are not integers of the batch's shape.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> import jaxdrop
    >>> layer = nn.MultiHeadDotProductAttention(
    ...     num_heads=2, dropout_rate=0.1, attention_fn=jaxdrop.attention.dot_product_attention)
    >>> x = jnp.ones((1, 5, 8))
    >>> variables = layer.init(jax.random.key(0), x, deterministic=True)
    >>> y = layer.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    >>> y.shape
    (1, 5, 8)
    >>> q = k = v = jax.random.normal(jax.random.key(2), (1, 100, 2, 8))
    >>> args = dict(dropout_rate=0.1, is_causal=True)
    >>> ref = jaxdrop.attention.dot_product_attention(q, k, v, dropout_rng=jax.random.key(3),
    ...                                               implementation="reference", **args)
    >>> tiled = jaxdrop.attention.dot_product_attention(q, k, v, dropout_rng=jax.random.key(3),
    ...                                                 implementation="blockwise", block_q=32, block_k=16,
    ...                                                 **args)
    >>> bool(jnp.allclose(ref, tiled, atol=1e-5))  # the same mask: equal to float rounding
    True
    >>> attend = jaxdrop.attention.dot_product_attention
    >>> ref = attend(q, k, v, drop_key_rate=0.2, dropout_rng=jax.random.key(4),  # DropKey, not dropout
    ...              implementation="reference")
    >>> tiled = attend(q, k, v, drop_key_rate=0.2, dropout_rng=jax.random.key(4), implementation="blockwise",
    ...                block_q=32, block_k=16)
    >>> bool(jnp.allclose(ref, tiled, atol=1e-5))
    True
  """
  dropout_rate = _checks.check_rate(dropout_rate, name="dropout_rate")
  if (precision or einsum_dot_general) and attn_weights_value_einsum:
    raise ValueError(
        "precision/einsum_dot_general and qk_attn_weights_einsum/attn_weights_value_einsum are"
        " mutually exclusive; pass only one of them."
    )
  if bool(qk_attn_weights_einsum) != bool(attn_weights_value_einsum):
    raise ValueError("qk_attn_weights_einsum and attn_weights_value_einsum must be given together.")
  query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
  _check_shapes(query, key, value)
  lengths = _check_lengths(key_value_seq_lengths, query.shape[:-3])
  reference_only = _reference_only(module, einsum_dot_general, qk_attn_weights_einsum)
  chosen = choose_implementation(query.shape, key.shape, implementation=implementation,
                                 reference_only=reference_only)
  active = not deterministic and not (isinstance(dropout_rate, float) and dropout_rate == 0.0)
  key_off = deterministic if drop_key_deterministic is None else drop_key_deterministic
  seed, key_seed = _seeds(active, dropout_rng, drop_key_rate, drop_key_rng, key_off, mask_bits)
  drop_key = nan = None
  if key_seed is not None:
    drop_key, nan = drop_key_terms(key_seed, drop_key_rate, mask_bits)
  if chosen == "blockwise":
    block_q = _check_block(block_q, DEFAULT_BLOCK_Q, "block_q")
    block_k = _check_block(block_k, DEFAULT_BLOCK_K, "block_k")
    dropout = None
    if seed is not None:
      threshold, scale, fill = dropout_terms(dropout_rate, "inverted", mask_bits)
      dropout = _flash.Dropout(seed, jnp.asarray(threshold, jnp.uint32), jnp.asarray(scale, jnp.float32),
                               jnp.zeros((), jnp.float32) if fill is None else jnp.asarray(fill, jnp.float32))
    out = _flash.blockwise_attention(
        query, key, value, bias, None if mask is None else jnp.asarray(mask).astype(jnp.bool_), lengths,
        is_causal=is_causal, dropout=dropout, broadcast_dropout=broadcast_dropout, mask_bits=mask_bits,
        precision=precision, block_q=block_q, block_k=block_k, drop_key=drop_key)
  else:
    kept = None
    if drop_key is not None:
      bias, kept = drop_key_bias(query, key, bias, drop_key, broadcast_dropout, mask_bits)
    out = _reference(query, key, value, bias, mask, lengths, broadcast_dropout, seed, dropout_rate, precision,
                     module, force_fp32_for_softmax, einsum_dot_general, qk_attn_weights_einsum,
                     attn_weights_value_einsum, is_causal, mask_bits, kept)
  return out if nan is None else out + nan.astype(out.dtype)  # NaN for an invalid traced DropKey rate


_FN = "jaxdrop.attention.dot_product_attention"


def _seeds(active: bool, dropout_rng, drop_key_rate, drop_key_rng, key_off: bool, mask_bits: int):
  """The mask generator's seeds of the attention dropout and of DropKey (``None`` where inactive).

  One key consumed once: ``dropout_rng`` alone when one of them is active and DropKey has no key of its own,
  else split in two (attention dropout, DropKey).
  """
  drop_key_rate = _checks.check_rate(drop_key_rate, name="drop_key_rate")
  keyed = not key_off and not (isinstance(drop_key_rate, float) and drop_key_rate == 0.0)
  if active or keyed:
    _checks.check_mask_bits(mask_bits)
  evaluation = "For evaluation, pass deterministic=True."
  key_seed = None
  if keyed and drop_key_rng is not None:
    key_seed = _bits.derive_seed(_checks.check_key(drop_key_rng, fn=_FN, argument="drop_key_rng",
                                                   evaluation=evaluation))
  if not active and (key_seed is not None or not keyed):
    return None, key_seed
  rng = _checks.check_key(dropout_rng, fn=_FN, argument="dropout_rng", evaluation=evaluation)
  if not active:
    return None, _bits.derive_seed(rng)
  if keyed and key_seed is None:
    rng, own = jax.random.split(rng)
    key_seed = _bits.derive_seed(own)
  return _bits.derive_seed(rng), key_seed


def choose_implementation(
    query_shape: tuple, key_shape: tuple, *, implementation: Implementation | None = None,
    reference_only: str | None = None,
) -> Implementation:
  """The path :func:`dot_product_attention` takes (the rule of ``implementation=None``).

  Args:
    query_shape: ``[batch..., q_length, num_heads, depth]``.
    key_shape: ``[batch..., kv_length, num_kv_heads, depth]``.
    implementation: ``"reference"``, ``"blockwise"`` or ``None``.
    reference_only: the name of a given argument that only the reference path supports, or ``None``.

  Returns:
    ``implementation`` if given; else ``"blockwise"`` where ``num_heads x q_length x kv_length x 4`` bytes
    exceed :data:`BLOCKWISE_ABOVE` and nothing requires the reference path, else ``"reference"``.

  Raises:
    ValueError: for another ``implementation``, or ``"blockwise"`` with a reference-only argument or a
      symbolic length.

  Example:
    >>> from jaxdrop.attention import choose_implementation
    >>> choose_implementation((8, 256, 8, 64), (8, 256, 8, 64)), choose_implementation((1, 1024, 8, 64),
    ...                                                                                 (1, 1024, 8, 64))
    ('reference', 'blockwise')
  """
  if implementation not in (None, "reference", "blockwise"):
    raise ValueError(f"implementation must be None, 'reference' or 'blockwise', got {implementation!r}.")
  lengths = (query_shape[-3], key_shape[-3])
  symbolic = any(export.is_symbolic_dim(n) for n in lengths)
  if implementation == "blockwise":
    if reference_only:
      raise ValueError(f"implementation='blockwise' does not take {reference_only}; pass"
                       " implementation='reference' (or None) to use it.")
    if symbolic:
      raise ValueError("implementation='blockwise' needs static q and kv lengths (a symbolic batch is fine);"
                       " pass implementation='reference' for symbolic lengths.")
    return "blockwise"
  if implementation == "reference" or reference_only or symbolic:
    return "reference"
  weights_bytes = 4 * query_shape[-2] * lengths[0] * lengths[1]
  return "blockwise" if weights_bytes > BLOCKWISE_ABOVE else "reference"


_BOUND: dict[str, Callable[..., jax.Array]] = {}


def with_implementation(implementation: Implementation | None, attention_fn: Callable[..., jax.Array],
                        *, owner: str) -> Callable[..., jax.Array]:
  """``attention_fn`` with ``implementation`` bound, for the layers' ``implementation`` argument.

  ``None`` returns ``attention_fn`` unchanged (:func:`dot_product_attention` for
  one this function returned). Otherwise ``attention_fn`` must
  be :func:`dot_product_attention` (or one this function returned): the result
  is ``functools.partial(dot_product_attention, implementation=implementation)``,
  one object per value (so that layers built alike compare and hash alike).

  Raises:
    ValueError: for an unknown ``implementation``, or another ``attention_fn`` (``owner`` names the layer).
  """
  if implementation is None:  # (a clone of a layer that had one: jaxdrop's function again)
    return dot_product_attention if any(attention_fn is f for f in _BOUND.values()) else attention_fn
  if implementation not in ("reference", "blockwise"):
    raise ValueError(f"{owner}: implementation must be None, 'reference' or 'blockwise', got"
                     f" {implementation!r}.")
  ours = attention_fn is dot_product_attention or any(attention_fn is f for f in _BOUND.values())
  if not ours:
    raise ValueError(f"{owner}: implementation= chooses the path of jaxdrop.attention.dot_product_attention,"
                     " but"
                     f" attention_fn is {attention_fn!r}; drop implementation= or attention_fn=.")
  if implementation not in _BOUND:
    _BOUND[implementation] = functools.partial(dot_product_attention, implementation=implementation)
  return _BOUND[implementation]


def takes_drop_key(attention_fn: Callable[..., jax.Array]) -> bool:
  """Whether ``attention_fn`` is :func:`dot_product_attention` (or a ``functools.partial`` of it), which takes
  ``drop_key_rate`` (for the layers' ``drop_key_rate``)."""
  while isinstance(attention_fn, functools.partial):
    attention_fn = attention_fn.func
  return attention_fn is dot_product_attention


def _reference_only(module, einsum_dot_general, qk_attn_weights_einsum) -> str | None:
  """The first given argument that only the reference path supports, by name."""
  if module is not None:
    return "module= (weights to sow)"
  if einsum_dot_general is not None:
    return "einsum_dot_general="
  if qk_attn_weights_einsum is not None:
    return "qk_attn_weights_einsum=/attn_weights_value_einsum="
  return None


def _check_shapes(query: jax.Array, key: jax.Array, value: jax.Array) -> None:
  if query.ndim < 3 or key.ndim != query.ndim or value.ndim != query.ndim:
    raise ValueError(f"query, key and value must be [batch..., length, heads, depth] of the same rank, got"
                     " shapes"
                     f" {query.shape}, {key.shape} and {value.shape}.")
  if query.shape[:-3] != key.shape[:-3] or query.shape[-1] != key.shape[-1]:
    raise ValueError(f"query and key must agree on [batch...] and depth, got {query.shape} and {key.shape}.")
  if key.shape[:-1] != value.shape[:-1]:
    raise ValueError(f"key and value must agree on [batch..., kv_length, num_kv_heads], got {key.shape} and"
                     f" {value.shape}.")
  heads, kv_heads = query.shape[-2], key.shape[-2]
  if heads % kv_heads:
    raise ValueError(f"the query heads ({heads}) must be a multiple of the key/value heads ({kv_heads}).")


def _check_lengths(lengths, batch: tuple) -> jax.Array | None:
  if lengths is None:
    return None
  lengths = jnp.asarray(lengths)
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise ValueError(f"key_value_seq_lengths must be integers (one length per example), got dtype"
                     f" {lengths.dtype}.")
  fits = lengths.ndim <= len(batch) and all(
      n == 1 or export.is_symbolic_dim(b) or n == b
      for n, b in zip(lengths.shape[::-1], tuple(batch)[::-1], strict=False))
  if not fits:
    raise ValueError(f"key_value_seq_lengths must be broadcastable to the batch shape {tuple(batch)}, got"
                     " shape"
                     f" {lengths.shape}.")
  return lengths


def _check_block(block, default: int, name: str) -> int:
  if block is None:
    return default
  if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
    raise ValueError(f"{name} must be a positive int (rows or keys of a tile), got {block!r}.")
  return int(block)


def _reference(query, key, value, bias, mask, lengths, broadcast_dropout, seed, dropout_rate, precision,
               module, force_fp32_for_softmax, einsum_dot_general, qk_attn_weights_einsum,
               attn_weights_value_einsum, is_causal, mask_bits, kept=None):
  """The weights (Flax's), their dropout and the weighted sum (``kept``: DropKey's keep mask, in ``bias``)."""
  if is_causal:
    mask = _both(mask, jnp.tril(jnp.ones((query.shape[-3], key.shape[-3]), jnp.bool_)))
  if lengths is not None:
    batch = query.shape[:-3]
    lengths = lengths.astype(jnp.int32)
    lengths = lengths.reshape((1,) * (len(batch) - lengths.ndim) + lengths.shape + (1, 1, 1))
    keys = jnp.arange(key.shape[-3], dtype=jnp.int32).reshape((1,) * (len(batch) + 2) + (key.shape[-3],))
    mask = _both(mask, keys < lengths)  # (batch..., 1, 1, kv_length)
  if isinstance(module, nn.Module) or force_fp32_for_softmax or einsum_dot_general or qk_attn_weights_einsum:
    weights = nn.dot_product_attention_weights(
        query, key, bias, mask, broadcast_dropout, None, 0.0, True, query.dtype, precision, module,
        force_fp32_for_softmax=force_fp32_for_softmax, einsum_dot_general=einsum_dot_general,
        einsum=qk_attn_weights_einsum)
  else:  # flax.nnx's, which also groups query heads over fewer key heads (GQA)
    weights = nnx_attention_weights(query, key, bias, mask, broadcast_dropout, None, 0.0, True, query.dtype,
                                    precision, module)
  allowed = mask if kept is None else _both(mask, kept)
  if allowed is not None:  # rows with no allowed key: zeros (flax spreads them evenly over every key)
    some = jnp.any(jnp.asarray(allowed).astype(jnp.bool_), axis=-1, keepdims=True)
    some = some.reshape((1,) * (weights.ndim - some.ndim) + some.shape)
    weights = jnp.where(some, weights, jnp.zeros((), weights.dtype))
  einsum = attn_weights_value_einsum or functools.partial(
      jnp.einsum, precision=precision, _dot_general=einsum_dot_general or jax.lax.dot_general
  )
  if seed is None:
    return _weighted_sum(einsum, weights, value)
  mask_shape = (*(1,) * (weights.ndim - 2), *weights.shape[-2:]) if broadcast_dropout else weights.shape

  # Rematerialized: the backward pass recomputes the dropped weights from ``weights`` (kept for the
  # softmax's own gradient) instead of storing them; dropout's own gradient regenerates its mask. The key
  # is consumed outside, once: the recomputation replays the mask from its seed.
  @jax.checkpoint
  def weighted_sum(weights, value, seed):
    dropped = seeded_dropout(seed, weights, dropout_rate, mask_shape, "inverted", mask_bits)
    return _weighted_sum(einsum, dropped, value)

  return weighted_sum(weights, value, seed)


def _both(mask, allowed: jax.Array) -> jax.Array:
  """``mask & allowed`` as booleans (``allowed`` alone for no ``mask``), their ranks aligned on the right."""
  if mask is None:
    return allowed
  mask = jnp.asarray(mask).astype(jnp.bool_)
  rank = max(mask.ndim, allowed.ndim)
  align = lambda x: x.reshape((1,) * (rank - x.ndim) + x.shape)
  return jnp.logical_and(align(mask), align(allowed))


def _weighted_sum(einsum, weights: jax.Array, value: jax.Array) -> jax.Array:
  """``sum_k weights[..., h, q, k] * value[..., k, h, d]``, with grouped value heads (GQA) as ``flax.nnx``."""
  q_heads, v_heads = weights.shape[-3], value.shape[-2]
  if q_heads == v_heads:
    return einsum(_WEIGHTED_SUM, weights, value)
  grouped = weights.reshape(*weights.shape[:-3], v_heads, q_heads // v_heads, *weights.shape[-2:])
  out = einsum("...hgqk,...khd->...qhgd", grouped, value)
  return out.reshape(*out.shape[:-3], q_heads, out.shape[-1])

