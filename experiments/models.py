"""The source tutorials' networks as Flax linen modules (``__call__(x, train)``), and d2l's
from-scratch MLP as a pure function of explicit parameters and keys.

One definition per network: the benchmarks build their Flax references from
these too, by passing ``dropout_layer=flax.linen.Dropout`` (or ``None`` for no
dropout) and ``cpu_workarounds=False`` (plain ``nn.Conv``/``nn.max_pool`` instead of
:mod:`jaxdrop.xla_cpu`'s workarounds).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxdrop
from jaxdrop import linen as jdl
from jaxdrop import xla_cpu

__all__ = ["CNN", "MLP", "MatConvNet", "StackedLSTM", "ViT", "init_scratch_mlp", "scratch_mlp", "torch_linear_init"]

# PyTorch's default nn.Linear/nn.Conv2d weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# MatConvNet's example: randn * sqrt(2 / fan_in).
he_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

DropoutLayer = Callable[[float], nn.Module] | None  # rate -> a layer called as layer(x, deterministic=...)


def _dropout(layer: DropoutLayer, rate: float, x: jax.Array, train: bool) -> jax.Array:
  """``layer(rate)(x, deterministic=not train)``; ``x`` itself when ``layer`` is ``None``."""
  return x if layer is None else layer(rate)(x, deterministic=not train)


def _max_pool(x: jax.Array, window, strides, padding="VALID", *, workaround: bool) -> jax.Array:
  pool = xla_cpu.max_pool if workaround else nn.max_pool
  return pool(x, window, strides=strides, padding=padding)


class MLP(nn.Module):
  """``Flatten -> [Dense -> ReLU -> Dropout] * k -> Dense`` (tutorials 000, 001, 004).

  Attributes:
    hidden: sizes of the hidden layers.
    rates: dropout rate after each hidden layer (0 for none).
    num_classes: output size.
    kernel_init: weight initializer (biases start at zero).
    dropout_first: put dropout before the activation, as tutorial 002's small net is written.
    dropout_layer: ``rate -> layer`` (default :class:`jaxdrop.linen.Dropout`; ``None``: no dropout).
  """

  hidden: Sequence[int]
  rates: Sequence[float]
  num_classes: int = 10
  kernel_init: nn.initializers.Initializer = torch_linear_init
  dropout_first: bool = False
  dropout_layer: DropoutLayer = jdl.Dropout

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for size, rate in zip(self.hidden, self.rates, strict=True):
      x = nn.Dense(size, kernel_init=self.kernel_init)(x)
      if self.dropout_first:
        x = nn.relu(_dropout(self.dropout_layer, rate, x, train))
      else:
        x = _dropout(self.dropout_layer, rate, nn.relu(x), train)
    return nn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


def init_scratch_mlp(key: jax.Array, sizes: Sequence[int], std: float = 0.01) -> dict[str, jax.Array]:
  """d2l's from-scratch parameters: weights ``N(0, std**2)``, zero biases."""
  keys = jax.random.split(key, len(sizes) - 1)
  params = {}
  for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    params[f"W{i + 1}"] = std * jax.random.normal(k, (fan_in, fan_out))
    params[f"b{i + 1}"] = jnp.zeros((fan_out,))
  return params


def scratch_mlp(params: dict[str, jax.Array], x: jax.Array, rates: Sequence[float], key: jax.Array | None) -> jax.Array:
  """d2l's ``Net`` with ``dropout_layer``: dropout after each hidden ReLU, only while training.

  ``key`` is ``None`` for evaluation; while training, layer ``i`` uses
  ``fold_in(key, i)``.
  """
  x = x.reshape((x.shape[0], -1))
  depth = len(rates) + 1
  for i in range(1, depth + 1):
    x = x @ params[f"W{i}"] + params[f"b{i}"][None]
    if i < depth:
      x = nn.relu(x)
      if key is not None:
        x = jaxdrop.dropout(jax.random.fold_in(key, i), x, rates[i - 1])
  return x


class CNN(nn.Module):
  """Tutorial 003's CIFAR network: three conv/ReLU/pool blocks, dropout, a 512-unit layer.

  ``Conv(32,3) -> ReLU -> MaxPool(2) -> Conv(64,3) -> ReLU -> MaxPool(2) ->
  Conv(128,3) -> ReLU -> MaxPool(2) -> Flatten -> Dropout -> Dense(512) -> ReLU
  -> Dropout -> Dense(10)``. ``padding="VALID"`` is the source tutorial's (32x32 inputs);
  ``"SAME"`` adapts it to inputs too small for three valid 3x3 convolutions.
  ``dropout_layer`` and ``cpu_workarounds`` as in :class:`MLP` and :class:`MatConvNet`.
  """

  rate: float = 0.25
  num_classes: int = 10
  padding: str = "VALID"
  dropout_layer: DropoutLayer = jdl.Dropout
  cpu_workarounds: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for features in (32, 64, 128):
      x = nn.Conv(features, (3, 3), padding=self.padding, kernel_init=torch_linear_init)(x)
      x = _max_pool(x, (2, 2), (2, 2), workaround=self.cpu_workarounds)
      x = nn.relu(x)  # = pool(relu(x)), with 4x fewer ReLUs
    x = x.reshape((x.shape[0], -1))
    x = _dropout(self.dropout_layer, self.rate, x, train)
    x = nn.relu(nn.Dense(512, kernel_init=torch_linear_init)(x))
    x = _dropout(self.dropout_layer, self.rate, x, train)
    return nn.Dense(self.num_classes, kernel_init=torch_linear_init)(x)


class StackedLSTM(nn.Module):
  """Tutorial 002's Keras model plus a softmax head: ``LSTM(128) -> Dropout(0.4) ->
  LSTM(64, dropout, recurrent_dropout) -> Dropout(0.4) -> LSTM(32, dropout,
  recurrent_dropout) -> Dense(num_classes)`` on ``(batch, time, features)``."""

  units: Sequence[int] = (128, 64, 32)
  between: float = 0.4
  dropout: float = 0.25
  recurrent_dropout: float = 0.25
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x.reshape((x.shape[0], x.shape[1], -1))  # images: rows are time steps
    last = len(self.units) - 1
    for i, units in enumerate(self.units):
      rates = (0.0, 0.0) if i == 0 else (self.dropout, self.recurrent_dropout)
      x = jdl.LSTM(units, dropout=rates[0], recurrent_dropout=rates[1], return_sequences=i < last)(
          x, deterministic=not train
      )
      if i < last:
        x = jdl.Dropout(self.between)(x, deterministic=not train)
    return nn.Dense(self.num_classes)(x)


class MatConvNet(nn.Module):
  """Tutorial 002's MatConvNet CIFAR network with its three ``dropout(0.5)`` layers.

  Five 5x5 convolutions (64, 64, 128, 128, 128) with 3x3/2 max-pools, dropout,
  three 4x4 convolutions (256), pool, dropout, two 4x4 (512), pool, dropout, a
  4x4 (512) and a 1x1 convolution to the classes, averaged over space, with
  MatConvNet's ``randn * sqrt(2 / fan_in)`` initialization. As written the 4x4
  convolutions are unpadded and shrink a 32x32 input to nothing; here they use
  ``"SAME"`` padding and every pool pads by one, so the network runs on 32x32
  and on 8x8 inputs. On a 1x1 feature map a convolution keeps only its centre
  tap (the others would only ever see the zero padding: same function, no
  parameters that can never learn).

  ``cpu_workarounds`` (default) uses :mod:`jaxdrop.xla_cpu`'s convolution
  (kernels larger than the map as one matmul, 17-37x faster on XLA:CPU) and
  max pooling; ``False`` plain ``nn.Conv`` and ``nn.max_pool`` (the same
  function and parameters). ``dropout_layer`` as in :class:`MLP`.
  """

  rate: float = 0.5
  num_classes: int = 10
  dropout_layer: DropoutLayer = jdl.Dropout
  cpu_workarounds: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv_fn = xla_cpu.conv_general_dilated if self.cpu_workarounds else jax.lax.conv_general_dilated

    def conv(x, features, size, relu=True):
      size = size if x.shape[1] * x.shape[2] > 1 else 1
      x = nn.Conv(features, (size, size), padding="SAME", kernel_init=he_init, conv_general_dilated=conv_fn)(x)
      return nn.relu(x) if relu else x

    def pool(x):  # pool(relu(x)) = relu(pool(x)): the ReLU after the pool (fewer elements)
      return nn.relu(_max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), workaround=self.cpu_workarounds))

    def drop(x):
      return _dropout(self.dropout_layer, self.rate, x, train)

    x = pool(conv(x, 64, 5, relu=False))
    x = pool(conv(x, 64, 5, relu=False))
    x = pool(conv(conv(conv(x, 128, 5), 128, 5), 128, 5, relu=False))
    x = drop(x)
    x = pool(conv(conv(conv(x, 256, 4), 256, 4), 256, 4, relu=False))
    x = drop(x)
    x = pool(conv(conv(x, 512, 4), 512, 4, relu=False))
    x = drop(x)
    x = conv(x, 512, 4)
    x = nn.Conv(self.num_classes, (1, 1), kernel_init=he_init)(x)
    return jnp.mean(x, axis=(1, 2))


class ViTBlock(nn.Module):
  """A pre-norm transformer block: ``x + drop_path(drop(attention(norm(x))))``, then the same with an MLP.

  ``impl="jaxdrop"`` uses :mod:`jaxdrop`'s attention dropout (key-only), :class:`jaxdrop.linen.Dropout`
  and :class:`jaxdrop.linen.DropPath`; ``impl="flax"`` builds the same block from Flax's own dropout:
  ``nn.dot_product_attention``'s and ``nn.Dropout`` (drop-path as ``nn.Dropout(broadcast_dims=(1, 2))``,
  one draw per example, as big_vision does). ``causal=True`` makes it a language model's block: jaxdrop's
  blockwise causal attention (no ``L x L`` array), or Flax's with a causal mask.
  """

  heads: int
  mlp_dim: int
  dropout: float
  attention_dropout: float
  drop_path: float
  impl: str = "jaxdrop"
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    det = not train
    mask = None
    if self.impl == "jaxdrop":
      attention_fn, drop = jaxdrop.attention.dot_product_attention, jdl.Dropout
      if self.causal:
        attention_fn = functools.partial(attention_fn, is_causal=True, implementation="blockwise")
      path = lambda y: jdl.DropPath(self.drop_path)(y, deterministic=det)
    else:
      attention_fn, drop = nn.dot_product_attention, nn.Dropout
      if self.causal:
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))  # (batch, 1, L, L)
      path = lambda y: nn.Dropout(self.drop_path, broadcast_dims=(1, 2))(y, deterministic=det)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=self.attention_dropout,
                                        broadcast_dropout=False, attention_fn=attention_fn)(
        nn.LayerNorm()(x), mask=mask, deterministic=det)
    x = x + path(drop(self.dropout)(y, deterministic=det))
    y = nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x)))
    y = nn.Dense(x.shape[-1])(drop(self.dropout)(y, deterministic=det))
    return x + path(drop(self.dropout)(y, deterministic=det))


class ViT(nn.Module):
  """A small Vision Transformer (Dosovitskiy et al., 2021) for NHWC images.

  Non-overlapping ``patch x patch`` patches, linearly embedded, a class token
  and learned position embeddings, ``depth`` pre-norm blocks with attention
  dropout, residual dropout and stochastic depth rising linearly over the
  blocks to ``drop_path`` (:func:`jaxdrop.drop_path_rates`), a final norm and
  a linear head on the class token. ``impl`` picks jaxdrop's or Flax's dropout
  (see :class:`ViTBlock`); the parameters are the same either way.
  """

  patch: int = 2
  dim: int = 64
  depth: int = 4
  heads: int = 4
  mlp_dim: int = 128
  num_classes: int = 10
  dropout: float = 0.1
  attention_dropout: float = 0.1
  drop_path: float = 0.1
  impl: str = "jaxdrop"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, h, w, c = x.shape
    p = self.patch
    patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
    x = nn.Dense(self.dim, name="embed")(patches)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)), x], axis=1)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
    drop = jdl.Dropout if self.impl == "jaxdrop" else nn.Dropout
    x = drop(self.dropout)(x, deterministic=not train)
    for rate in jaxdrop.drop_path_rates(self.drop_path, self.depth):
      x = ViTBlock(self.heads, self.mlp_dim, self.dropout, self.attention_dropout, rate, self.impl)(x, train)
    return nn.Dense(self.num_classes, name="head")(nn.LayerNorm()(x)[:, 0])
