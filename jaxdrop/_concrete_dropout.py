"""Concrete dropout (Gal, Hron & Kendall, 2017): a drop rate learned by gradient descent.

The Bernoulli mask is relaxed to the concrete (Gumbel-sigmoid) distribution,

    z = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / temperature),  u ~ U(0, 1),

where ``z`` is the (soft) *drop* indicator, so the output ``x * (1 - z) / (1 - p)``
is differentiable with respect to ``p``. The rate is trained together with the
weights on ``loss + regularizer``: the weight part ``l**2 / (tau N) * sum(W**2) /
(1 - p)`` and the entropy part ``2 / (tau N) * K * (p log p + (1 - p) log(1 - p))``
for a layer of ``K`` inputs, with the length-scale ``l``, the model precision
``tau`` and the training-set size ``N`` (the paper's constants, as its reference
code writes them). The larger ``N``, the weaker the regularizer and the lower the
learned rate.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _bits, _checks

__all__ = ["concrete_dropout", "concrete_dropout_regularizer"]

EPS = 1e-7  # the reference code's guard inside the logarithms


def _relaxed(seed, x, rate, temperature):
  """The concrete-dropout output for the uniform noise drawn from ``seed`` (a pure function of its inputs)."""
  dtype = _checks.compute_dtype(x.dtype)
  generator_key = _bits.stream_key(seed)
  u = jax.random.uniform(generator_key, x.shape, dtype)
  p = jnp.asarray(rate, dtype)
  if p.ndim:  # a rate per unit
    p = jnp.broadcast_to(p, x.shape)
  logit = jnp.log(p + EPS) - jnp.log1p(EPS - p) + jnp.log(u + EPS) - jnp.log1p(EPS - u)
  drop = jax.nn.sigmoid(logit / jnp.asarray(temperature, dtype))
  return (x.astype(dtype) * (1 - drop) / (1 - p)).astype(x.dtype)


# The rate is learned, so the tangent is the whole of _relaxed's (in x, rate and temperature). As in
# jaxdrop._masked: a custom_jvp whose primal is _relaxed and whose tangent is rematerialized (saving
# nothing) and one custom_jvp call, so that reverse mode keeps (seed, x, rate, temperature) and draws the
# noise again from the seed in the backward pass instead of storing it, whatever an enclosing
# jax.checkpoint's policy saves.


@jax.custom_jvp
def _relaxed_key_only(seed, x, rate, temperature):
  return _relaxed(seed, x, rate, temperature)


@_relaxed_key_only.defjvp
def _relaxed_key_only_jvp(primals, tangents):
  seed, x, rate, temperature = primals
  return _relaxed(seed, x, rate, temperature), _relaxed_tangent(seed, x, rate, temperature, *tangents[1:])


@functools.partial(jax.checkpoint, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
def _relaxed_tangent(seed, x, rate, temperature, x_dot, rate_dot, temperature_dot):
  return _relaxed_linear(seed, x, rate, temperature, x_dot, rate_dot, temperature_dot)


def _relaxed_jvp(seed, x, rate, temperature, x_dot, rate_dot, temperature_dot):
  """The tangent of :func:`_relaxed`, linear in the dotted arguments."""
  relaxed = lambda x, rate, temperature: _relaxed(seed, x, rate, temperature)
  return jax.jvp(relaxed, (x, rate, temperature), (x_dot, rate_dot, temperature_dot))[1]


_relaxed_linear = jax.custom_jvp(_relaxed_jvp)
_relaxed_linear.defjvp(lambda primals, tangents: jax.jvp(_relaxed_jvp, primals, tangents))  # second order


def concrete_dropout(
    key: jax.Array,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    temperature: float = 0.1,
) -> jax.Array:
  """Concrete dropout of ``x`` with drop probability ``rate``, differentiable with respect to ``rate``.

  Args:
    key: a PRNG key.
    x: a floating-point array; its dtype is preserved.
    rate: drop probability in ``(0, 1)``, usually ``sigmoid(p_logit)`` of a
      trained parameter; a scalar, or an array broadcastable to ``x`` (a rate
      per unit).
    temperature: of the concrete relaxation; as it falls to 0 the mask tends
      to a Bernoulli mask (the paper uses 0.1).

  Returns:
    ``x * (1 - z) / (1 - rate)``, ``z`` the relaxed drop indicator (module
    docstring). Its expectation over the noise is close to ``x`` and the
    backward pass draws the noise again from the key instead of storing it.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxdrop
    >>> x = jnp.ones(100_000)
    >>> y = jaxdrop.concrete_dropout(jax.random.key(0), x, 0.2)
    >>> round(float((y < 0.5).mean()), 2)  # about the rate's share is (nearly) dropped
    0.2
    >>> g = jax.grad(lambda p: jaxdrop.concrete_dropout(jax.random.key(0), x, p).sum())(0.2)
    >>> bool(jnp.isfinite(g))
    True
  """
  x = _checks.check_floating(x)
  key = _checks.check_key(key, fn="jaxdrop.concrete_dropout")
  value = _checks.concrete_scalar(temperature)
  if value is not None and not (math.isfinite(value) and value > 0):
    raise ValueError(f"temperature must be a finite number > 0, got temperature={temperature!r}.")
  if _checks.is_concrete(rate):
    values = np.asarray(rate, np.float64)
    if not np.all((values > 0) & (values < 1)):
      raise ValueError(f"rate must be in (0, 1) for concrete dropout (a drop probability; learn it as"
                       f" sigmoid(p_logit)), got rate={rate!r}.")
  if jnp.ndim(rate) and not _broadcasts(jnp.shape(rate), x.shape):
    raise ValueError(f"rate of shape {jnp.shape(rate)} does not broadcast to x's shape {x.shape}.")
  seed = _bits.derive_seed(key)
  return _relaxed_key_only(seed, x, rate, temperature)


def _broadcasts(shape, target) -> bool:
  try:
    return jnp.broadcast_shapes(shape, target) == tuple(target)
  except ValueError:
    return False


def concrete_dropout_regularizer(
    kernel: jax.Array,
    rate: float | jax.Array,
    *,
    length_scale: float,
    data_size: int,
    precision: float = 1.0,
    input_dim: int | None = None,
) -> jax.Array:
  """The regularizer of one concrete-dropout layer, added to the loss like a penalty.

  Args:
    kernel: the weights that the dropped inputs multiply (a Dense kernel
      ``(inputs, outputs)``).
    rate: the layer's drop probability in ``(0, 1)`` (traced: the one being learned).
    length_scale: the prior length-scale ``l`` of the weights.
    data_size: the number of training examples ``N``.
    precision: the model precision ``tau`` (1 for classification).
    input_dim: the number of dropped inputs ``K``; default ``kernel.shape[0]``.

  Returns:
    ``l**2 / (tau N) * sum(kernel**2) / (1 - p) + 2 / (tau N) * K * (p log p + (1 - p) log(1 - p))``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxdrop
    >>> reg = jaxdrop.concrete_dropout_regularizer(jnp.ones((4, 2)), 0.5, length_scale=1.0, data_size=8)
    >>> round(float(reg), 4)  # 8 / 8 / 0.5 + 2 / 8 * 4 * log(0.5)
    1.3069
  """
  if input_dim is None:
    if jnp.ndim(kernel) != 2:
      raise ValueError(f"input_dim is needed for a kernel of shape {jnp.shape(kernel)}"
                       " (default: kernel.shape[0] of a 2-D Dense kernel).")
    input_dim = jnp.shape(kernel)[0]
  for name, value in (("length_scale", length_scale), ("data_size", data_size), ("precision", precision)):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
      raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}.")
  p = jnp.asarray(rate, jnp.float32)
  squares = jnp.sum(jnp.square(kernel.astype(jnp.float32)))
  weight = length_scale**2 / (precision * data_size) * squares / (1 - p)
  entropy = p * jnp.log(p + EPS) + (1 - p) * jnp.log1p(EPS - p)
  return weight + 2 / (precision * data_size) * input_dim * entropy
