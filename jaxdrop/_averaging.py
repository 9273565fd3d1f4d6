"""Weight averaging: an EMA of the parameters (timm's ``ModelEmaV3``) and SWA (``torch.optim.swa_utils``).

Both averages are optax transforms that keep the averaged parameters in their
state, chained **last**, after the optimizer: ``optax.chain(optax.adam(1e-3),
jaxdrop.ema(0.999))``. An optax transform sees the updates and the parameters
*before* the step, so each one computes the parameters after the step as
``optax.apply_updates(params, updates)`` (what ``TrainState.apply_gradients``
and every optax loop do next, so both are the same numbers by construction)
and averages those; the updates pass through unchanged, so the training
itself is untouched. :func:`averaged_params` reads the average out of an
``opt_state``.

* :func:`ema`: ``ema <- lerp(ema, params, 1 - decay)`` after every step, with
  the decay of :func:`ema_decay` (timm's ``ModelEmaV3.get_decay``, warm-up
  included), the step counted as timm's ``train.py`` counts it (1 after the
  first update).
* :func:`swa`: the equal-weight running average of ``AveragedModel``
  (``n_averaged``, ``avg + (p - avg) / (n_averaged + 1)``) of the parameters
  after steps ``start, start + frequency, ...``; with its learning rates
  :func:`swa_lr_schedule` (``SWALR``) or :func:`cyclic_swa_schedule` (the SWA
  paper's cyclic rate, both in ``jaxdrop/_swa_schedules.py``), and
  :func:`update_bn` (``jaxdrop/_update_bn.py``) to recompute a linen model's
  BatchNorm statistics on the averaged weights.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdrop._checks import check_scalar

__all__ = [
    "EmaState",
    "SwaState",
    "averaged_params",
    "ema",
    "ema_decay",
    "swa",
]


class EmaState(NamedTuple):
  """State of :func:`ema`.

  Attributes:
    step: the number of updates seen (int32).
    ema: the exponential moving average of the parameters after each update
      (the initial parameters before the first).
  """

  step: jax.Array
  ema: Any


class SwaState(NamedTuple):
  """State of :func:`swa`.

  Attributes:
    step: the number of updates seen (int32).
    n_averaged: how many parameter snapshots the average holds (torch's
      ``AveragedModel.n_averaged``).
    mean: their equal-weight mean; before the first snapshot, the current
      parameters.
  """

  step: jax.Array
  n_averaged: jax.Array
  mean: Any


def _number(value, name: str, *, low: float | None = None, high: float | None = None,
            positive: bool = False) -> float:
  number = check_scalar(value, name=name, meaning="a hyperparameter of the average")
  if number is None:  # traced: checked where it is used (no range check possible)
    return value
  if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high) \
      or (positive and number <= 0):
    bounds = "> 0" if positive else f"in [{low}, {high}]" if high is not None else f">= {low}"
    raise ValueError(f"{name} must be a finite number {bounds}, got {name}={value!r}.")
  return number


def _integer(value, name: str, *, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}.")
  return int(value)


def ema_decay(
    step: int | jax.Array,
    decay: float = 0.9999,
    *,
    min_decay: float = 0.0,
    update_after_step: int = 0,
    use_warmup: bool = False,
    warmup_gamma: float = 1.0,
    warmup_power: float = 2 / 3,
) -> jax.Array:
  """The EMA decay at ``step``, as timm's ``ModelEmaV3.get_decay(step)``.

  With ``s = max(0, step - update_after_step - 1)``: 0 while ``s == 0`` (the
  average copies the parameters), else ``decay`` or, with ``use_warmup``,
  ``clip(1 - (1 + s / warmup_gamma) ** -warmup_power, min_decay, decay)``.
  timm clips only with the warm-up (``min_decay`` is unused without it), as
  here. Computed in float32 (timm: Python floats).

  Args:
    step: the update's number, 1 for the first (timm's ``num_updates`` after
      its increment); may be traced.
    decay: the decay (and, with warm-up, its ceiling).
    min_decay: the warm-up's floor.
    update_after_step: the first ``update_after_step + 1`` updates copy the parameters.
    use_warmup: ramp the decay up from 0.
    warmup_gamma: timm's ``warmup_gamma`` (``inv_gamma`` in @crowsonkb's notes).
    warmup_power: timm's ``warmup_power``.

  Returns:
    A float32 scalar.

  Example:
    >>> import jaxdrop
    >>> [round(float(jaxdrop.ema_decay(s, 0.999, use_warmup=True)), 3) for s in (1, 2, 3, 10)]
    [0.0, 0.37, 0.519, 0.785]
  """
  s = jnp.maximum(jnp.asarray(step, jnp.int32) - update_after_step - 1, 0).astype(jnp.float32)
  if use_warmup:
    ramp = 1 - (1 + s / jnp.float32(warmup_gamma)) ** jnp.float32(-warmup_power)
    value = jnp.maximum(jnp.minimum(ramp, jnp.float32(decay)), jnp.float32(min_decay))
  else:
    value = jnp.broadcast_to(jnp.float32(decay), s.shape)
  return jnp.where(s <= 0, jnp.float32(0), value)


def _lerp(start, end, weight):
  """``torch.lerp(start, end, weight)`` as torch computes it (``start + w (end - start)`` for ``w < 0.5``,
  ``end - (end - start)(1 - w)`` above, so that ``w = 1`` gives ``end`` exactly), in float32 at least;
  integer leaves are copied (as timm copies non-float buffers)."""
  end = jnp.asarray(end)
  if not jnp.issubdtype(end.dtype, jnp.inexact):
    return end
  dtype = jnp.promote_types(end.dtype, jnp.float32)
  a, b = jnp.asarray(start).astype(dtype), end.astype(dtype)
  w = weight.astype(dtype)
  return jnp.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w)).astype(end.dtype)


def _need_params(params, name: str) -> None:
  if params is None:
    raise ValueError(f"jaxdrop.{name} averages the parameters: call its update as tx.update(updates, state,"
                     f" params) (TrainState.apply_gradients does).")


def _copy(tree):
  # A new array per leaf, also under jit (an output that is an input would alias the parameters' buffers).
  return jax.tree.map(lambda p: jnp.copy(jnp.asarray(p)), tree)


def ema(
    decay: float = 0.9999,
    *,
    min_decay: float = 0.0,
    update_after_step: int = 0,
    use_warmup: bool = False,
    warmup_gamma: float = 1.0,
    warmup_power: float = 2 / 3,
) -> optax.GradientTransformation:
  """An exponential moving average of the parameters, as timm's ``ModelEmaV3``, as an optax transform.

  Chain it last, after the optimizer (it must see the updates that are
  applied). After update ``t`` (1 for the first) the state's average becomes
  ``lerp(ema, params_t, 1 - ema_decay(t, ...))``, with ``params_t`` the
  parameters after the update: timm's ``model_ema.update(model,
  step=num_updates)`` after each optimizer step. The average starts as the
  initial parameters (timm's ``deepcopy``); the first ``update_after_step +
  1`` updates copy the parameters. The updates pass through unchanged; read
  the average with :func:`averaged_params`. timm's ``update(model)`` without a
  step (the constant decay from the first update) (without warm-up) is
  ``update_after_step=-1``.

  Args:
    decay: the decay (the ceiling of the warm-up), in ``[0, 1]``.
    min_decay: the warm-up's floor, in ``[0, 1]``.
    update_after_step: see :func:`ema_decay` (an integer >= -1).
    use_warmup: ramp the decay up (see :func:`ema_decay`).
    warmup_gamma: the warm-up's ``gamma`` (> 0).
    warmup_power: the warm-up's ``power`` (> 0).

  Returns:
    An ``optax.GradientTransformation`` whose state is an :class:`EmaState`.

  Raises:
    ValueError: if a hyperparameter is out of range, or ``update`` is called
      without ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, jaxdrop
    >>> tx = optax.chain(optax.sgd(1.0), jaxdrop.ema(0.5))
    >>> params = {"w": jnp.zeros(())}
    >>> state = tx.init(params)
    >>> for grad in (-2.0, -2.0, -2.0):  # params: 2, 4, 6
    ...   updates, state = tx.update({"w": jnp.asarray(grad)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> float(jaxdrop.averaged_params(state)["w"])  # 2 (copied), then 3, then 4.5
    4.5
  """
  decay = _number(decay, "decay", low=0.0, high=1.0)
  min_decay = _number(min_decay, "min_decay", low=0.0, high=1.0)
  warmup_gamma = _number(warmup_gamma, "warmup_gamma", positive=True)
  warmup_power = _number(warmup_power, "warmup_power", positive=True)
  update_after_step = _integer(update_after_step, "update_after_step", minimum=-1)

  def init(params):
    return EmaState(step=jnp.zeros([], jnp.int32), ema=_copy(params))

  def update(updates, state, params=None):
    _need_params(params, "ema")
    count = optax.safe_increment(state.step)
    rate = ema_decay(count, decay, min_decay=min_decay, update_after_step=update_after_step,
                     use_warmup=use_warmup, warmup_gamma=warmup_gamma, warmup_power=warmup_power)
    new = optax.apply_updates(params, updates)
    average = jax.tree.map(lambda e, p: _lerp(e, p, 1 - rate), state.ema, new)
    return updates, EmaState(step=count, ema=average)

  return optax.GradientTransformation(init, update)


def swa(start: int = 1, frequency: int = 1) -> optax.GradientTransformation:
  """Stochastic weight averaging (Izmailov et al., 2018) as ``torch.optim.swa_utils.AveragedModel``.

  Chain it last, after the optimizer. The parameters after updates ``start,
  start + frequency, start + 2 frequency, ...`` (update 1 is the first) enter
  an equal-weight running average: the first is copied, then
  ``avg + (p - avg) / (n_averaged + 1)`` (torch's ``get_swa_avg_fn``), and
  ``n_averaged`` counts them. Torch's loop ``if epoch > swa_start:
  swa_model.update_parameters(model)`` at the end of each epoch is
  ``start = (swa_start + 2) * steps_per_epoch, frequency = steps_per_epoch``.
  Before the first snapshot the state holds the current parameters (torch's
  holds a copy of the initial ones, which nothing reads), so evaluating the
  average before ``start`` evaluates the model itself. The updates pass
  through unchanged; read the average with :func:`averaged_params`; pair it
  with :func:`swa_lr_schedule` or :func:`cyclic_swa_schedule`, and
  :func:`update_bn` for BatchNorm models.

  Args:
    start: the first update averaged (an integer >= 1).
    frequency: average every this many updates from ``start`` (>= 1).

  Returns:
    An ``optax.GradientTransformation`` whose state is a :class:`SwaState`.

  Raises:
    ValueError: if ``start`` or ``frequency`` is not a positive integer, or
      ``update`` is called without ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, jaxdrop
    >>> tx = optax.chain(optax.sgd(1.0), jaxdrop.swa(start=2, frequency=2))
    >>> params = {"w": jnp.zeros(())}
    >>> state = tx.init(params)
    >>> for _ in range(6):  # params: 1, 2, 3, 4, 5, 6; averaged after updates 2, 4, 6
    ...   updates, state = tx.update({"w": jnp.asarray(-1.0)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> float(jaxdrop.averaged_params(state)["w"]), int(state[1].n_averaged)
    (4.0, 3)
  """
  start = _integer(start, "start", minimum=1)
  frequency = _integer(frequency, "frequency", minimum=1)

  def init(params):
    zero = jnp.zeros([], jnp.int32)
    return SwaState(step=zero, n_averaged=zero, mean=_copy(params))

  def update(updates, state, params=None):
    _need_params(params, "swa")
    count = optax.safe_increment(state.step)
    due = (count >= start) & ((count - start) % frequency == 0)
    n = state.n_averaged
    new = optax.apply_updates(params, updates)

    def average(mean, p):
      p = jnp.asarray(p)
      if not jnp.issubdtype(p.dtype, jnp.inexact):
        return p
      step = mean + (p - mean) / (n + 1).astype(p.dtype)
      return jnp.where(n > 0, jnp.where(due, step, mean), p)

    mean = jax.tree.map(average, state.mean, new)
    return updates, SwaState(step=count, n_averaged=n + due.astype(jnp.int32), mean=mean)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any, kind: Literal["ema", "swa"] | None = None) -> Any:
  """The averaged parameters that an :func:`ema` or :func:`swa` transform keeps in ``opt_state``.

  Args:
    opt_state: an optimizer state (of a chain, ``inject_hyperparams``, ...)
      that holds one :class:`EmaState` or :class:`SwaState`, or both.
    kind: ``"ema"`` or ``"swa"``: which, when it holds both.

  Returns:
    The averaged parameters (with the state's leading axes, e.g. ``fit_seeds``' runs axis).

  Raises:
    ValueError: if ``opt_state`` holds no such state, or more than one of the asked kind.

  Example:
    >>> import jax.numpy as jnp, optax, jaxdrop
    >>> state = optax.chain(optax.adam(1e-3), jaxdrop.ema()).init({"w": jnp.ones(2)})
    >>> jaxdrop.averaged_params(state)["w"].tolist()
    [1.0, 1.0]
  """
  if kind not in (None, "ema", "swa"):
    raise ValueError(f"kind must be 'ema', 'swa' or None, got kind={kind!r}.")
  leaves = jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, (EmaState, SwaState)))
  states = [s for s in leaves if isinstance(s, (EmaState, SwaState))]
  found = [s for s in states if kind is None or isinstance(s, EmaState) == (kind == "ema")]
  if not found:
    what = "jaxdrop.ema or jaxdrop.swa" if kind is None else f"jaxdrop.{kind}"
    raise ValueError(f"opt_state holds no {what} state: chain one after the optimizer, e.g."
                     f" optax.chain(tx, jaxdrop.{kind or 'ema'}(...)).")
  if len(found) > 1:
    raise ValueError(f"opt_state holds {len(found)} averages: pass kind='ema' or kind='swa' (one of each at"
                     f" most).")
  state = found[0]
  return state.ema if isinstance(state, EmaState) else state.mean
