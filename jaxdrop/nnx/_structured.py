"""NNX layers for structured dropout: token (patch) and embedding (word) dropout, SpecAugment's masks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import default_embed_init

from jaxdrop._dropout import Mode, dropout_eval
from jaxdrop._embedding_dropout import embedding_dropout
from jaxdrop._patch_dropout import patch_dropout
from jaxdrop._spec_augment import check_mask_param, check_p, effective_mask_param, mask_along_axis
from jaxdrop.nnx._base import RateModule, StochasticModule

__all__ = ["EmbeddingDropout", "FrequencyMasking", "PatchDropout", "TimeMasking"]

Rngs = nnx.Rngs | nnx.RngStream | None


class PatchDropout(RateModule):
  """:func:`jaxdrop.patch_dropout` as an NNX layer (timm's ``PatchDropout``); the identity when deterministic.

  Args:
    rate: the fraction of patch tokens to drop, in ``[0, 1)`` (a call's
      ``rate=`` must be a Python float: it sets the output length).
    num_prefix_tokens: leading tokens always kept.
    ordered: keep the kept tokens in their original order.
    return_indices: also return the kept patch tokens' indices (at evaluation
      ``0 .. L - 1``).
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the stream forked from ``rngs``.
    rngs: random streams (optional if a key is passed at call time).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.PatchDropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> layer(jnp.ones((2, 1 + 16, 8))).shape
    (2, 9, 8)
  """

  def __init__(
      self,
      rate: float = 0.5,
      *,
      num_prefix_tokens: int = 1,
      ordered: bool = False,
      return_indices: bool = False,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.num_prefix_tokens, self.ordered = rate, num_prefix_tokens, ordered
    self.return_indices = return_indices

  def _train(self, key, inputs, rate):
    return patch_dropout(key, inputs, rate, num_prefix_tokens=self.num_prefix_tokens, ordered=self.ordered,
                         return_indices=self.return_indices)

  def _eval(self, inputs, rate):
    return patch_dropout(None, inputs, 0.0, num_prefix_tokens=self.num_prefix_tokens,
                         return_indices=self.return_indices)


class EmbeddingDropout(StochasticModule):
  """``nnx.Embed`` whose vocabulary rows are dropped while training (:func:`jaxdrop.embedding_dropout`).

  The table is the parameter ``embedding``, drawn as ``nnx.Embed`` draws it from the same ``rngs``.

  Args:
    num_embeddings: the vocabulary size.
    features: the embedding size.
    rate: the probability of dropping a word (a call may pass ``rate=``).
    per_sequence: one mask per sequence (axis 0 of the ids) instead of one per call.
    mode: ``"inverted"`` or ``"classic"``.
    mask_bits: mask precision.
    embedding_init: the table's initializer (``nnx.Embed``'s default).
    deterministic: ``True`` for evaluation.
    rng_collection: the dropout stream.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.EmbeddingDropout(100, 8, rate=0.1, rngs=nnx.Rngs(0))
    >>> layer(jnp.array([[1, 2, 3]])).shape
    (1, 3, 8)
  """

  _rngs_optional = False  # its rngs also draws the table

  def __init__(
      self,
      num_embeddings: int,
      features: int,
      *,
      rate: float = 0.1,
      per_sequence: bool = False,
      mode: Mode = "inverted",
      mask_bits: int = 16,
      embedding_init: Any = default_embed_init,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
  ):
    # The table first, as nnx.Embed draws it from the same rngs (forking the dropout stream may advance
    # the default stream that params falls back to).
    self.embedding = nnx.Param(embedding_init(rngs.params(), (num_embeddings, features), jnp.float32))
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.rate, self.per_sequence, self.mode, self.mask_bits = rate, per_sequence, mode, mask_bits

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      rate: float | jax.Array | None = None,
  ) -> jax.Array:
    """Looks ``inputs`` (token ids) up (training unless deterministic); ``rate`` overrides ``self.rate``."""
    rate = self.rate if rate is None else rate
    deterministic, key = self.resolve(deterministic, rngs, rate)
    table = self.embedding[...]
    if deterministic:
      rows = embedding_dropout(None, table, inputs, 0.0, mode=self.mode, mask_bits=self.mask_bits)
      return dropout_eval(rows, rate, mode=self.mode, mask_bits=self.mask_bits)
    return embedding_dropout(key, table, inputs, rate, per_sequence=self.per_sequence, mode=self.mode,
                             mask_bits=self.mask_bits)


class _AxisMasking(StochasticModule):
  """A SpecAugment mask along one axis (``_axis``); ``mask_param`` may be overridden at call time."""

  _axis = -1

  def __init__(
      self,
      mask_param: int,
      *,
      iid_masks: bool = False,
      p: float = 1.0,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)
    self.mask_param, self.iid_masks, self.p = check_mask_param(mask_param), iid_masks, check_p(p)

  def __call__(
      self, inputs: jax.Array, *, deterministic: bool | None = None, rngs=None,
      mask_value: float | jax.Array = 0.0, mask_param: int | None = None,
  ) -> jax.Array:
    """Masks a band of ``inputs`` (training unless deterministic); ``mask_value`` is torchaudio's argument."""
    mask_param = check_mask_param(self.mask_param if mask_param is None else mask_param)
    size = jnp.shape(inputs)[self._axis] if jnp.ndim(inputs) >= 2 else 0
    random = effective_mask_param(mask_param, self.p, size) >= 1
    deterministic, key = self.resolve(deterministic, rngs, random=random)
    if deterministic:
      return inputs
    return mask_along_axis(key, inputs, mask_param, self._axis, mask_value=mask_value, p=self.p,
                           iid=self.iid_masks)


class FrequencyMasking(_AxisMasking):
  """:func:`jaxdrop.frequency_mask` as an NNX layer (torchaudio's ``FrequencyMasking``); the identity when
  deterministic.

  Args:
    mask_param: the longest band of frequencies (axis ``-2`` of ``(..., freq, time)``).
    iid_masks: one band per example and channel (inputs of 3 dimensions or more).
    deterministic: ``True`` for evaluation.
    rng_collection: the stream forked from ``rngs``.
    rngs: random streams (optional if a key is passed at call time).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> jdx.FrequencyMasking(4, rngs=nnx.Rngs(0))(jnp.ones((2, 8, 20))).shape
    (2, 8, 20)
  """

  _axis = -2

  def __init__(
      self,
      mask_param: int,
      *,
      iid_masks: bool = False,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: Rngs = None,
  ):
    super().__init__(mask_param, iid_masks=iid_masks, deterministic=deterministic,
                     rng_collection=rng_collection, rngs=rngs)


class TimeMasking(_AxisMasking):
  """:func:`jaxdrop.time_mask` as an NNX layer (torchaudio's ``TimeMasking``); the identity when
  deterministic.

  Args:
    mask_param: the longest band of time steps (axis ``-1`` of ``(..., freq, time)``).
    iid_masks: one band per example and channel (inputs of 3 dimensions or more).
    p: the largest fraction of the steps one band may cover, in ``[0, 1]``.
    deterministic: ``True`` for evaluation.
    rng_collection: the stream forked from ``rngs``.
    rngs: random streams (optional if a key is passed at call time).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.TimeMasking(10, p=0.2, rngs=nnx.Rngs(0))
    >>> int((layer(jnp.ones((2, 8, 20))) == 0).all(axis=1).sum(axis=-1).max()) < 4
    True
  """

  _axis = -1
