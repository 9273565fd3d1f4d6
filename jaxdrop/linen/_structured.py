"""linen layers for structured dropout: token (patch) and embedding (word) dropout, SpecAugment's masks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import default_embed_init

from jaxdrop._dropout import Mode, dropout_eval
from jaxdrop._embedding_dropout import embedding_dropout
from jaxdrop._patch_dropout import patch_dropout
from jaxdrop._spec_augment import check_mask_param, check_p, effective_mask_param, mask_along_axis
from jaxdrop.linen._base import RateModule, StochasticModule

__all__ = ["EmbeddingDropout", "FrequencyMasking", "PatchDropout", "TimeMasking"]


class PatchDropout(RateModule):
  """:func:`jaxdrop.patch_dropout` as a linen layer (timm's ``PatchDropout``); the identity when
  deterministic.

  Attributes:
    rate: the fraction of patch tokens to drop, in ``[0, 1)`` (a call's
      ``rate=`` must be a Python float: it sets the output length).
    num_prefix_tokens: leading tokens always kept.
    ordered: keep the kept tokens in their original order.
    return_indices: also return the kept patch tokens' indices (at evaluation
      ``0 .. L - 1``, every patch kept).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.PatchDropout(0.5)
    >>> layer.apply({}, jnp.ones((2, 1 + 16, 8)), deterministic=False,
    ...             rngs={"dropout": jax.random.key(0)}).shape
    (2, 9, 8)
  """

  num_prefix_tokens: int = 1
  ordered: bool = False
  return_indices: bool = False

  def _train(self, key, inputs, rate):
    return patch_dropout(key, inputs, rate, num_prefix_tokens=self.num_prefix_tokens, ordered=self.ordered,
                         return_indices=self.return_indices)

  def _eval(self, inputs, rate):
    return patch_dropout(None, inputs, 0.0, num_prefix_tokens=self.num_prefix_tokens,
                         return_indices=self.return_indices)


class EmbeddingDropout(StochasticModule):
  """``nn.Embed`` whose vocabulary rows are dropped while training (:func:`jaxdrop.embedding_dropout`).

  A dropped word's embedding is zero at every occurrence (in the batch, or in
  its sequence with ``per_sequence``); kept rows are scaled by ``1 / (1 - rate)``.
  The table is the parameter ``embedding``, as ``nn.Embed``'s.

  Attributes:
    num_embeddings: the vocabulary size.
    features: the embedding size.
    rate: the probability of dropping a word (a call may pass ``rate=``).
    per_sequence: one mask per sequence (axis 0 of the ids) instead of one per call.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision.
    embedding_init: the table's initializer (``nn.Embed``'s default).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> layer = jdl.EmbeddingDropout(100, 8, rate=0.1)
    >>> ids = jnp.array([[1, 2, 3]])
    >>> variables = layer.init(jax.random.key(0), ids, deterministic=True)
    >>> layer.apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
    (1, 3, 8)
  """

  num_embeddings: int
  features: int
  rate: float = 0.1
  per_sequence: bool = False
  mode: Mode = "inverted"
  mask_bits: int = 16
  embedding_init: Any = default_embed_init

  @nn.compact
  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      rate: float | jax.Array | None = None,
  ):
    rate = self.rate if rate is None else rate
    table = self.param("embedding", self.embedding_init, (self.num_embeddings, self.features), jnp.float32)
    deterministic, key = self.resolve(deterministic, rng, rate)
    if deterministic:
      rows = embedding_dropout(None, table, inputs, 0.0, mode=self.mode, mask_bits=self.mask_bits)
      return dropout_eval(rows, rate, mode=self.mode, mask_bits=self.mask_bits)
    return embedding_dropout(key, table, inputs, rate, per_sequence=self.per_sequence, mode=self.mode,
                             mask_bits=self.mask_bits)


class _AxisMasking(StochasticModule):
  """A SpecAugment mask along one axis: ``mask_param`` may be overridden at call time (a Python int)."""

  mask_param: int
  iid_masks: bool = False

  _axis = -1  # the masked axis (a class constant, not a field)

  def __call__(
      self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None, *,
      mask_value: float | jax.Array = 0.0, mask_param: int | None = None,
  ):
    """Masks a band of ``inputs`` (training unless deterministic); ``mask_value`` is torchaudio's argument."""
    mask_param, p = check_mask_param(self.mask_param if mask_param is None else mask_param), self._cap()
    size = jnp.shape(inputs)[self._axis] if jnp.ndim(inputs) >= 2 else 0
    random = effective_mask_param(mask_param, check_p(p), size) >= 1
    deterministic, key = self.resolve(deterministic, rng, random=random)
    if deterministic:
      return inputs
    return mask_along_axis(key, inputs, mask_param, self._axis, mask_value=mask_value, p=p,
                           iid=self.iid_masks)

  def _cap(self) -> float:
    """torchaudio's ``p``: 1 (no cap) but for time masks."""
    return 1.0


class FrequencyMasking(_AxisMasking):
  """:func:`jaxdrop.frequency_mask` as a linen layer (torchaudio's ``FrequencyMasking``); the identity when
  deterministic.

  Attributes:
    mask_param: the longest band of frequencies (axis ``-2`` of ``(..., freq, time)``).
    iid_masks: one band per example and channel (inputs of 3 dimensions or more).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> y = jdl.FrequencyMasking(4).apply({}, jnp.ones((2, 8, 20)), deterministic=False,
    ...                                   rngs={"dropout": jax.random.key(0)})
    >>> y.shape
    (2, 8, 20)
  """

  _axis = -2


class TimeMasking(_AxisMasking):
  """:func:`jaxdrop.time_mask` as a linen layer (torchaudio's ``TimeMasking``); the identity when
  deterministic.

  Attributes:
    mask_param: the longest band of time steps (axis ``-1`` of ``(..., freq, time)``).
    iid_masks: one band per example and channel (inputs of 3 dimensions or more).
    p: the largest fraction of the steps one band may cover, in ``[0, 1]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxdrop import linen as jdl
    >>> y = jdl.TimeMasking(10, p=0.2).apply({}, jnp.ones((2, 8, 20)), deterministic=False,
    ...                                      rngs={"dropout": jax.random.key(0)})
    >>> int((y == 0).all(axis=1).sum(axis=-1).max()) < 4
    True
  """

  p: float = 1.0

  def _cap(self) -> float:
    return self.p
