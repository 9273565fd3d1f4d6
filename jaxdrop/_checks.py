"""Argument checks shared by every jaxdrop function.

Checks run only on values that are concrete at trace time (Python numbers,
NumPy arrays, committed JAX arrays), so a traced rate still works under
``jit`` and ``vmap``; see :func:`check_rate`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_broadcast_dims",
    "check_floating",
    "check_key",
    "check_mask_bits",
    "check_mode",
    "check_rate",
    "check_scalar",
    "is_concrete",
]

MODES = ("inverted", "classic")
MASK_BITS = (8, 16, 32)


def is_concrete(value: Any) -> bool:
  """True when ``value`` can be read on the host while tracing."""
  return not isinstance(value, jax.core.Tracer)


def check_rate(
    rate: Any,
    *,
    name: str = "rate",
    allow_one: bool = True,
    meaning: str = "the probability of dropping a unit (not of keeping it)",
):
  """Validates a drop probability.

  Args:
    rate: a Python or NumPy scalar, or a scalar JAX array (possibly traced).
    name: the argument's name, used in error messages.
    allow_one: whether ``rate == 1`` is meaningful for the caller.
    meaning: what the value is, for error messages.

  Returns:
    A Python ``float`` when the rate is concrete, else the traced scalar
    unchanged (a traced rate cannot be checked; functions that accept one turn
    an invalid value into NaN outputs instead of silently wrong ones).

  Raises:
    ValueError: if a concrete rate is NaN or outside ``[0, 1]`` (``[0, 1)``
      when ``allow_one`` is false), or the rate is not a scalar.
    TypeError: if the rate is not a real number.
  """
  if not is_concrete(rate):
    if jnp.ndim(rate) != 0:
      raise ValueError(f"{name} must be a scalar, got an array of shape {jnp.shape(rate)}.")
    if not jnp.issubdtype(jnp.result_type(rate), jnp.floating):
      raise TypeError(f"{name} must be a floating scalar, got dtype {jnp.result_type(rate)}.")
    return rate
  if isinstance(rate, (bool, np.bool_)):
    raise TypeError(f"{name} must be a real number ({meaning}), got {rate!r}.")
  if isinstance(rate, numbers.Real):
    value = float(rate)
  elif hasattr(rate, "dtype") and hasattr(rate, "shape"):
    real = jnp.issubdtype(rate.dtype, jnp.floating) or jnp.issubdtype(rate.dtype, jnp.integer)  # bfloat16 too
    if not real or jnp.issubdtype(rate.dtype, jnp.bool_):
      raise TypeError(f"{name} must be a real number ({meaning}), got dtype {rate.dtype}.")
    if np.ndim(rate) != 0:
      raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(rate)}.")
    value = float(rate)
  else:
    raise TypeError(f"{name} must be a real number ({meaning}), got {type(rate).__name__} {rate!r}.")
  upper_ok = value <= 1.0 if allow_one else value < 1.0
  if not (value >= 0.0 and upper_ok):  # also rejects NaN
    interval = "[0, 1]" if allow_one else "[0, 1)"
    raise ValueError(
        f"{name} must be in {interval}: it is {meaning}; got {name}={rate!r}."
    )
  return value


def concrete_scalar(value: Any) -> float | None:
  """``value`` as a Python float when it is a real scalar known at trace time (Python, NumPy or a
  committed 0-d JAX array), else ``None`` (a traced value, a schedule, ...)."""
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (numbers.Real, np.number)):
    return float(value)
  if (isinstance(value, (np.ndarray, jax.Array)) and is_concrete(value) and np.ndim(value) == 0
      and np.issubdtype(np.dtype(value.dtype), np.number) and not np.iscomplexobj(value)):
    return float(value)
  return None


def check_scalar(
    value: Any, *, name: str, meaning: str, schedule: bool = False, where: str = ""
) -> float | None:
  """Checks that a hyperparameter is one real number (or, with ``schedule``, an optax schedule).

  Accepted: Python and NumPy real numbers (ints too), 0-d real JAX or NumPy
  arrays (``optax.inject_hyperparams`` passes its hyperparameters as those),
  traced 0-d real scalars, and with ``schedule`` any callable (a function of
  the step). Refused: bools (``True`` is not a rate), complex numbers,
  strings, ``None``, lists and arrays of more than one value.

  Args:
    value: the hyperparameter.
    name: the argument's name, used in error messages.
    meaning: what the value is, for error messages.
    schedule: whether a schedule (a callable) is accepted.
    where: appended to the value in error messages (e.g. which group it is for).

  Returns:
    The value as a Python ``float`` when it is known at trace time, else
    ``None`` (a traced scalar or a schedule), for the caller's range check.
    The caller keeps using ``value`` itself.

  Raises:
    TypeError: if ``value`` is not a real number (nor a schedule, where one is accepted).
    ValueError: if ``value`` is an array with more than one value.
  """
  kind = "a real number or a schedule" if schedule else "a real number"
  if callable(value) and not hasattr(value, "dtype"):
    if schedule:
      return None
    raise TypeError(
        f"{name} must be {kind} ({meaning}), got the callable {value!r}{where}; it cannot be a schedule"
        " here (wrap the factory in optax.inject_hyperparams to schedule it)."
    )
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be {kind} ({meaning}), got the bool {value!r}{where}; pass a number.")
  if isinstance(value, numbers.Real):  # Python and NumPy real scalars
    return float(value)
  if hasattr(value, "dtype") and hasattr(value, "shape"):  # NumPy and JAX arrays, traced or not
    dtype = value.dtype
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)  # bfloat16 too
    if not real or jnp.issubdtype(dtype, jnp.bool_):
      raise TypeError(f"{name} must be {kind} ({meaning}), got an array of dtype {dtype}{where}.")
    if np.ndim(value) != 0:
      raise ValueError(
          f"{name} must be a scalar ({meaning}), got an array of shape {np.shape(value)}{where};"
          " pass one number."
      )
    return float(value) if is_concrete(value) else None
  fix = "a float, a 0-d real array or an optax schedule" if schedule else "a float or a 0-d real array"
  raise TypeError(
      f"{name} must be {kind} ({meaning}), got {type(value).__name__} {value!r}{where}; pass {fix}."
  )


def check_floating(x: Any, *, name: str = "x") -> jax.Array:
  """Returns ``x`` as a JAX array, or raises ``TypeError`` unless it is real floating."""
  dtype = jnp.result_type(x) if hasattr(x, "dtype") else None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{name} must be a real floating-point array (float16, bfloat16, float32 or"
        f" float64), got {dtype if dtype is not None else type(x).__name__}. Cast it"
        f" first, e.g. {name}.astype(jnp.float32)."
    )
  return jnp.asarray(x)


def check_key(key: Any, *, fn: str, argument: str | None = None, evaluation: str | None = None) -> jax.Array:
  """Checks that ``key`` is one PRNG key, typed (``jax.random.key``) or legacy.

  Args:
    key: the key.
    fn: the public function's name, for error messages.
    argument: the name of the key's argument where it is a keyword one
      (``"key"`` for ``jaxdrop.lstm``, ``"dropout_rng"`` for attention): the
      hint then reads ``fn(..., argument=jax.random.key(0))``. ``None``: the
      key is ``fn``'s first positional argument.
    evaluation: how to call ``fn`` for evaluation, for the message when
      ``key`` is ``None`` (default: not to call it).

  Returns:
    The key as a typed key.

  Raises:
    ValueError: if ``key`` is ``None`` or a batch of keys.
    TypeError: if ``key`` is not a key at all.
  """
  label = f" ({argument}=)" if argument else ""
  if key is None:
    example = f"{fn}(..., {argument}=jax.random.key(0))" if argument else f"{fn}(jax.random.key(0), ...)"
    evaluation = evaluation or (
        "For evaluation, do not call it (or use the deterministic mode of the Flax module)."
    )
    raise ValueError(
        f"{fn} needs a PRNG key to draw its random mask, got {argument or 'key'}=None. Pass one,"
        f" e.g. {example}, and use a fresh key (split or fold_in) on every call. {evaluation}"
    )
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
          f"{fn} takes one PRNG key{label}, got a batch of shape {key.shape}; map over"
          " several keys with jax.vmap."
      )
    return key
  if dtype == jnp.uint32 and np.ndim(key) >= 1:
    if np.ndim(key) == 1:  # a legacy jax.random.PRNGKey: raw key data
      return _wrap_legacy(key, fn)
    raise ValueError(
        f"{fn} takes one PRNG key{label}, got a raw key array of shape {np.shape(key)};"
        " map over several keys with jax.vmap."
    )
  raise TypeError(
      f"{fn} expects a PRNG key{label} from jax.random.key(seed) or jax.random.PRNGKey(seed),"
      f" got {type(key).__name__} with dtype {dtype}."
  )


def _wrap_legacy(key: jax.Array, fn: str) -> jax.Array:
  """Raw key data as a typed key: the default implementation's when the shape is its, else by shape
  (``uint32[2]``: threefry, ``uint32[4]``: rbg, as ``jax.random.PRNGKey(seed, impl=...)`` makes them)."""
  default_shape = jax.random.key_data(jax.random.key(0)).shape
  if key.shape == default_shape:
    return jax.random.wrap_key_data(key)
  by_shape = {(2,): "threefry2x32", (4,): "rbg"}
  if key.shape in by_shape:
    return jax.random.wrap_key_data(key, impl=by_shape[key.shape])
  raise ValueError(f"{fn} got raw key data of shape {key.shape}, which no PRNG implementation uses; pass"
                   " jax.random.key(seed) (or raw data of shape (2,) or (4,)).")


def check_broadcast_dims(broadcast_dims: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
  """Normalizes ``broadcast_dims`` (axes, or one axis) to sorted non-negative axes of an ``ndim`` array.

  Raises:
    ValueError: if an axis is out of range or repeated.
    TypeError: if an entry is not an integer.
  """
  axes: Any = broadcast_dims  # whatever the caller passed: checked here
  if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
    axes = (axes,)
  try:
    dims = tuple(axes)
  except TypeError:
    raise TypeError(
        f"broadcast_dims must be a sequence of axes (or one axis), got {broadcast_dims!r}."
    ) from None
  out = []
  for d in dims:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
      raise TypeError(f"broadcast_dims must contain integers, got {dims!r}.")
    if not -ndim <= d < ndim:
      raise ValueError(
          f"broadcast_dims={dims!r} is out of range for an input with {ndim}"
          f" dimension(s); valid axes are {-ndim}..{ndim - 1}."
      )
    out.append(int(d) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f"broadcast_dims={dims!r} names the same axis twice.")
  return tuple(sorted(out))


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}.")
  return mode


def check_mask_bits(mask_bits: int) -> int:
  if isinstance(mask_bits, bool) or not isinstance(mask_bits, (int, np.integer)):
    raise TypeError(f"mask_bits must be an int, one of {MASK_BITS}, got mask_bits={mask_bits!r}.")
  if mask_bits not in MASK_BITS:
    raise ValueError(f"mask_bits must be one of {MASK_BITS}, got mask_bits={mask_bits!r}.")
  return int(mask_bits)


def compute_dtype(dtype) -> jnp.dtype:
  """float32 for half-precision floats, else ``dtype``: where scales are applied.

  (``jnp.promote_types`` would refuse bfloat16 with float32 under
  ``jax_numpy_dtype_promotion="strict"``.)
  """
  dtype = jnp.dtype(dtype)
  return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype
