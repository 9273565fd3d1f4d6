"""XLA:CPU speed workarounds, all in one place: layer kernels and what the training engine chooses.

XLA:CPU is much slower than it need be on three patterns of the seeds' CNNs;
each workaround here is exact (to float rounding) and changes nothing on
other backends. The module needs only jax (not the ``training`` extra); the
engine reads it as ``jaxdrop.training.xla_cpu``, the same module object.

- :func:`conv_general_dilated`: a convolution whose kernel is larger than the
  feature map (a 4x4 "SAME" convolution over a 2x2 map, MatConvNet's last
  blocks) takes XLA:CPU 17 to 37 times longer than the same work as one
  matrix product (forward and backward of a 512-channel layer, batch 64:
  1.5 s against 42 ms; PyTorch 112 ms). There it is one matmul over patches;
  everywhere else ``lax.conv_general_dilated``. Pass it to
  ``flax.linen.Conv(conv_general_dilated=...)``: the parameters stay the same.
- :func:`max_pool`: ``flax.linen.max_pool``'s gradient is XLA's
  ``select_and_scatter``, a slow scalar loop on XLA:CPU (more than half of
  E4's train step). Here the pool is the elementwise maximum of the window's
  strided slices, so the gradient is slices, pads and selects, which fuse.
  The value is ``flax.linen.max_pool``'s; the gradient too, except where a
  window holds several equal maxima (flax gives it to one, this splits it).
- :data:`CPU_CONV_COMPILER_OPTIONS` and :func:`choose_compiler_options`:
  YNNPACK takes over dot products and convolutions, about 1.6x faster
  convolutional train steps (E4: 46 -> 28 ms), a little slower dense ones, so
  the engine sets them per compiled function, for convolutional models on
  CPU only. :func:`choose_path` runs such models' epochs as a Python loop of
  jitted steps: inside a compiled loop the backward convolutions lose their
  fast path (about 20x slower).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["CPU_CONV_COMPILER_OPTIONS", "choose_compiler_options", "choose_path", "conv_general_dilated",
           "convolves_on_cpu", "max_pool"]

#: The options under which XLA's CPU backend hands the dot products and convolutions of a compiled function
#: to YNNPACK (pass them as ``jax.jit(compiler_options=...)``).
CPU_CONV_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


class Task(Protocol):
  """What the choosers read of a :class:`jaxdrop.training.Task`: its ``apply`` (this module does not import
  the engine; not exported)."""

  @property
  def apply(self) -> Callable[..., Any]:
    """``(params, x, train, key) -> outputs``."""
    ...


def _has_convolution(jaxpr) -> bool:
  """Whether ``jaxpr`` (or one nested in it: scan, cond, custom_vjp, ...) convolves."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      return True
    if any(_has_convolution(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params)):
      return True
  return False


def convolves_on_cpu(task: Task, params: Any, sample: jax.Array) -> bool:
  """Whether ``task``'s training forward pass convolves and runs on XLA:CPU (traces it once).

  Args:
    task: a :class:`jaxdrop.training.Task` (only its ``apply`` is read).
    params: the model's parameters.
    sample: a batch of inputs (its first example is traced).
  """
  if jax.default_backend() != "cpu":
    return False
  jaxpr = jax.make_jaxpr(lambda p, x: task.apply(p, x, True, jax.random.key(0)))(params, sample[:1])
  return _has_convolution(jaxpr.jaxpr)


def path_for(convolves: bool) -> tuple[Literal["scan", "loop"], str]:
  """The epoch path (``"scan"`` or ``"loop"``) for a model that does or does not convolve on XLA:CPU, and
  why."""
  if convolves:
    return "loop", "convolutions on XLA:CPU are slow inside a compiled loop"
  return "scan", "whole epoch in one compiled call"


def compiler_options_for(convolves: bool) -> dict[str, str]:
  """:data:`CPU_CONV_COMPILER_OPTIONS` for a model that convolves on XLA:CPU, else XLA's defaults."""
  return dict(CPU_CONV_COMPILER_OPTIONS) if convolves else {}


def choose_path(task: Task, params: Any, sample: jax.Array) -> tuple[Literal["scan", "loop"], str]:
  """The epoch path for ``task`` on the current backend, and why.

  ``"scan"`` (a whole epoch in one compiled call) is fastest for dense and
  recurrent models; convolutional models on XLA:CPU run the jitted step from
  Python (``"loop"``).

  Args:
    task: a :class:`jaxdrop.training.Task` (only its ``apply`` is read).
    params: the model's parameters.
    sample: a batch of inputs (its first example is traced).
  """
  return path_for(convolves_on_cpu(task, params, sample))


def choose_compiler_options(task: Task, params: Any, sample: jax.Array) -> dict[str, str]:
  """XLA options for ``task``'s compiled steps: :data:`CPU_CONV_COMPILER_OPTIONS` for convolutional models on
  CPU.

  Args:
    task: a :class:`jaxdrop.training.Task` (only its ``apply`` is read).
    params: the model's parameters.
    sample: a batch of inputs (its first example is traced).
  """
  return compiler_options_for(convolves_on_cpu(task, params, sample))


def _use_patches(
    lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
) -> bool:
  if lhs.ndim != 4 or feature_group_count != 1:
    return False
  if any(s != 1 for s in window_strides) or any(d != 1 for d in (lhs_dilation or ())) or any(
      d != 1 for d in (rhs_dilation or ())):
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != nhwc:
    return False
  return rhs.shape[0] > lhs.shape[1] or rhs.shape[1] > lhs.shape[2]


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """``lax.conv_general_dilated``, as one matmul over patches where the kernel is larger than the map.

  Its arguments (``lhs``, ``rhs``, ``window_strides``, ``padding``,
  ``lhs_dilation``, ``rhs_dilation``, ``dimension_numbers``,
  ``feature_group_count``, ``batch_group_count``, ``precision``,
  ``preferred_element_type``) are those of ``lax.conv_general_dilated``.

  Returns:
    The convolution; the patch path sums in another order, so it agrees with
    ``lax.conv_general_dilated`` to float rounding.

  Example:
    >>> import flax.linen as nn
    >>> from jaxdrop.xla_cpu import conv_general_dilated
    >>> layer = nn.Conv(512, (4, 4), padding="SAME", conv_general_dilated=conv_general_dilated)
  """
  if batch_group_count != 1 or not _use_patches(lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                                                 dimension_numbers, feature_group_count):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  kh, kw, cin, cout = rhs.shape
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (1, 1), padding)
  else:
    pads = padding
  padded = jnp.pad(lhs, ((0, 0), *(tuple(p) for p in pads), (0, 0)))
  oh, ow = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
  patches = jnp.concatenate([padded[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)], axis=-1)
  out = jnp.matmul(patches.reshape(-1, kh * kw * cin), rhs.reshape(kh * kw * cin, cout), precision=precision,
                   preferred_element_type=preferred_element_type)
  return out.reshape(lhs.shape[0], oh, ow, cout)


def max_pool(
    x: jax.Array,
    window: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> jax.Array:
  """Max pooling over the spatial axes of ``x`` (``(batch, *spatial, features)``, as flax).

  Args:
    x: the input, ``N`` spatial axes between the batch and feature axes.
    window: the window's size along each spatial axis.
    strides: the step along each spatial axis (default: 1).
    padding: ``"VALID"``, ``"SAME"`` or one ``(low, high)`` pair per spatial
      axis; padded positions hold ``-inf`` as in ``flax.linen.max_pool``.

  Returns:
    The pooled array.

  Example:
    >>> from jaxdrop.xla_cpu import max_pool
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, (2, 2), (2, 2))[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
  """
  window = tuple(window)
  spatial = x.ndim - 2
  if len(window) != spatial:
    raise ValueError(f"window must have one size per spatial axis ({spatial}), got {window}.")
  strides = tuple(strides) if strides is not None else (1,) * spatial
  if len(strides) != spatial:
    raise ValueError(f"strides must have one step per spatial axis ({spatial}), got {strides}.")
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(x.shape[1:-1], window, strides, padding)
  else:
    pads = [(lo, hi) for lo, hi in padding]
  if any(p != (0, 0) for p in pads):
    fill = jnp.array(-jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype)
    x = lax.pad(x, fill, [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
  out_shape = [(size - w) // s + 1 for size, w, s in zip(x.shape[1:-1], window, strides, strict=True)]
  if any(n < 1 for n in out_shape):
    raise ValueError(f"window {window} is larger than the (padded) input {x.shape[1:-1]}.")

  def window_slice(offsets):
    start = (0, *offsets, 0)
    limit = (x.shape[0], *(o + (n - 1) * s + 1 for o, n, s in zip(offsets, out_shape, strides, strict=True)),
             x.shape[-1])
    return lax.slice(x, start, limit, (1, *strides, 1))

  offsets = np.indices(window).reshape(spatial, -1).T.tolist()
  return functools.reduce(jnp.maximum, (window_slice(tuple(o)) for o in offsets))
