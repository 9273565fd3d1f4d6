"""``flax.nnx.LoRA`` and ``LoRALinear`` with dropout on the adapter's input, as peft's ``lora_dropout``."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxdrop.nnx._dropout import Dropout

__all__ = ["LoRA", "LoRALinear"]


def _adapter_dropout(rate, mask_bits, deterministic, rng_collection, rngs: nnx.Rngs) -> Dropout:
  """The adapter's dropout, forking ``rngs``' dropout (or default) stream; without either
  (``nnx.Rngs(params=0)``) it has no stream, and a training call with a positive rate then asks for one."""
  has_stream = rng_collection in rngs or "default" in rngs
  return Dropout(rate, mask_bits=mask_bits, deterministic=deterministic, rng_collection=rng_collection,
                 rngs=rngs if has_stream else None)


class LoRA(nnx.LoRA):
  """``flax.nnx.LoRA`` whose adapter sees ``dropout(x)`` while the base module sees ``x``.

  peft's ``lora_dropout``: ``out = base_module(x) + dropout(x) @ lora_a @ lora_b``
  (peft's ``base_layer(x) + lora_B(lora_A(dropout(x))) * scaling``, with flax's
  scaling of 1). The dropout is a :class:`jaxdrop.nnx.Dropout` submodule
  (``self.lora_dropout``), inverted, so evaluation (``model.eval()``,
  ``deterministic=True``) is flax's ``LoRA`` exactly. The parameters are drawn
  as flax's ``LoRA`` draws them from the same ``rngs``; the dropout forks the
  ``"dropout"`` stream (or ``default``) after them.

  Args:
    in_features: the number of input features.
    lora_rank: the rank of the adapter.
    out_features: the number of output features.
    lora_dropout: the adapter's dropout rate (a call may pass ``rate=``).
    mask_bits: the dropout's mask precision.
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the dropout's stream.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).
    **kwargs: ``flax.nnx.LoRA``'s other arguments (``base_module``, ``dtype``,
      initializers, ...).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> base = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    >>> layer = jdx.LoRA(3, 2, 4, base_module=base, lora_dropout=0.1, rngs=nnx.Rngs(1))
    >>> layer(jnp.ones((16, 3))).shape
    (16, 4)
  """

  def __init__(
      self,
      in_features: int,
      lora_rank: int,
      out_features: int,
      *,
      lora_dropout: float = 0.0,
      mask_bits: int = 16,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
      **kwargs: Any,
  ):
    super().__init__(in_features, lora_rank, out_features, rngs=rngs, **kwargs)
    self.lora_dropout = _adapter_dropout(lora_dropout, mask_bits, deterministic, rng_collection, rngs)

  def __call__(self, x: jax.Array, *, deterministic: bool | None = None, rngs=None,
               rate: float | jax.Array | None = None, **kwargs: Any) -> jax.Array:
    """``base_module(x, **kwargs) + dropout(x) @ lora_a @ lora_b``; ``deterministic``, ``rngs`` and ``rate``
    are the dropout's (as :class:`jaxdrop.nnx.Dropout`'s call arguments)."""
    dropped = self.lora_dropout(x, deterministic=deterministic, rngs=rngs, rate=rate)
    # promote_dtype takes flax's (inputs, lora_a, lora_b): once for the base's input, once for the adapter's.
    x, lora_a, lora_b = self.promote_dtype((x, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
    dropped = self.promote_dtype((dropped, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)[0]
    out = dropped @ lora_a @ lora_b
    if self.base_module is not None:
      if not callable(self.base_module):
        raise ValueError("LoRA's base_module must be callable (a module such as nnx.Linear), got"
                         f" {type(self.base_module).__name__}.")
      out += self.base_module(x, **kwargs)
    return out


class LoRALinear(nnx.LoRALinear):
  """``flax.nnx.LoRALinear`` with peft's ``lora_dropout`` on the adapter's input.

  ``out = linear(x) + dropout(x) @ lora.lora_a @ lora.lora_b``: the kernel,
  bias and adapter are flax's ``LoRALinear``'s (same state structure, same
  values from the same ``rngs``), plus the :class:`jaxdrop.nnx.Dropout`
  submodule ``lora_dropout``; evaluation is flax's ``LoRALinear`` exactly.

  Args:
    in_features: the number of input features.
    out_features: the number of output features.
    lora_rank: the rank of the adapter.
    lora_dropout: the adapter's dropout rate (a call may pass ``rate=``).
    mask_bits: the dropout's mask precision.
    deterministic: ``True`` for evaluation (``model.eval()`` sets it).
    rng_collection: the dropout's stream.
    rngs: ``nnx.Rngs`` with a ``params`` stream (and ``dropout``, or ``default``).
    **kwargs: ``flax.nnx.LoRALinear``'s other arguments.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxdrop import nnx as jdx
    >>> layer = jdx.LoRALinear(3, 4, lora_rank=2, lora_dropout=0.1, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((16, 3))).shape
    (16, 4)
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      lora_rank: int,
      lora_dropout: float = 0.0,
      mask_bits: int = 16,
      deterministic: bool | None = False,
      rng_collection: str = "dropout",
      rngs: nnx.Rngs,
      **kwargs: Any,
  ):
    super().__init__(in_features, out_features, lora_rank=lora_rank, rngs=rngs, **kwargs)
    self.lora_dropout = _adapter_dropout(lora_dropout, mask_bits, deterministic, rng_collection, rngs)

  def __call__(self, x: jax.Array, out_sharding=None, *, deterministic: bool | None = None, rngs=None,
               rate: float | jax.Array | None = None) -> jax.Array:
    """``linear(x) + lora(dropout(x))``; ``deterministic``, ``rngs`` and ``rate`` are the dropout's."""
    y = nnx.Linear.__call__(self, x, out_sharding=out_sharding)
    y += self.lora(self.lora_dropout(x, deterministic=deterministic, rngs=rngs, rate=rate))
    return y
