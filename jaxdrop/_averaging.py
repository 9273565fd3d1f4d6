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
  paper's cyclic rate), and :func:`update_bn` to recompute a linen model's
  BatchNorm statistics on the averaged weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen import normalization as _normalization

from jaxdrop._checks import check_scalar

__all__ = [
    "EmaState",
    "SwaState",
    "averaged_params",
    "cyclic_swa_schedule",
    "ema",
    "ema_decay",
    "swa",
    "swa_lr_schedule",
    "update_bn",
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


def _anneal(strategy: str, t):
  return t if strategy == "linear" else (1 - jnp.cos(jnp.pi * t)) / 2


def swa_lr_schedule(
    base: optax.ScalarOrSchedule,
    swa_lr: float,
    start: int,
    anneal_steps: int = 10,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    *,
    every: int = 1,
) -> optax.Schedule:
  """``base`` until ``start``, then torch's ``SWALR``: anneal to ``swa_lr`` in ``anneal_steps``, then hold.

  ``SWALR(optimizer, swa_lr, anneal_epochs, anneal_strategy)`` built at step
  ``start`` (when the rate is ``lr0 = base(start)``), and stepped every
  ``every`` optimizer steps, sets after its ``k``-th step (``k = (count -
  start) // every``) ``swa_lr * alpha + lr0 * (1 - alpha)``, ``alpha = f(t)``,
  ``t = clip(k / max(1, anneal_steps), 0, 1)`` (with ``anneal_steps = 0``,
  ``k`` is at least 1: ``swa_lr`` at once), ``f(t) = (1 - cos(pi t)) / 2`` for
  ``"cos"``, ``t`` for ``"linear"``. Torch carries ``lr0`` from step to step
  (recovering it from the current rate); the closed form here equals it up to
  rounding. ``every = steps_per_epoch`` with ``start`` at an epoch boundary
  is torch's per-epoch scheduler.

  Args:
    base: the learning rate (or schedule) before ``start``.
    swa_lr: the SWA learning rate (>= 0).
    start: the step (optax's count) from which ``SWALR`` runs (>= 0).
    anneal_steps: torch's ``anneal_epochs``, in scheduler steps (>= 0).
    anneal_strategy: ``"cos"`` or ``"linear"``.
    every: optimizer steps per scheduler step (>= 1).

  Returns:
    An optax schedule (``count -> learning rate``).

  Raises:
    ValueError: if an argument is out of range.

  Example:
    >>> import jaxdrop
    >>> lr = jaxdrop.swa_lr_schedule(0.1, 0.02, start=5, anneal_steps=4, anneal_strategy="linear")
    >>> [round(float(lr(c)), 4) for c in (0, 4, 5, 6, 7, 8, 9, 20)]
    [0.1, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02, 0.02]
  """
  check_scalar(base, name="base", meaning="the learning rate before start", schedule=True)
  swa_lr = _number(swa_lr, "swa_lr", low=0.0)
  start = _integer(start, "start", minimum=0)
  anneal_steps = _integer(anneal_steps, "anneal_steps", minimum=0)
  every = _integer(every, "every", minimum=1)
  if anneal_strategy not in ("cos", "linear"):
    raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got anneal_strategy={anneal_strategy!r}.")
  rate = base if callable(base) else (lambda count: base)

  def schedule(count):
    count = jnp.asarray(count)
    k = (count - start) // every
    if anneal_steps == 0:
      k = jnp.maximum(k, 1)
    t = jnp.clip(k.astype(jnp.float32) / max(1, anneal_steps), 0, 1)
    alpha = _anneal(anneal_strategy, t)
    lr0 = jnp.asarray(rate(jnp.asarray(start, count.dtype)), jnp.float32)
    swa_rate = jnp.float32(swa_lr) * alpha + lr0 * (1 - alpha)
    return jnp.where(count < start, jnp.asarray(rate(count), jnp.float32), swa_rate)

  return schedule


def cyclic_swa_schedule(max_lr: float, min_lr: float, cycle: int) -> optax.Schedule:
  """The SWA paper's cyclic learning rate (Izmailov et al., 2018, eq. 2): ``max_lr`` down to ``min_lr``.

  Iteration ``i = count + 1`` has rate ``(1 - t) max_lr + t min_lr`` with
  ``t = (mod(i - 1, cycle) + 1) / cycle``, so the last step of each cycle
  runs at ``min_lr``: average those, with ``swa(start=cycle,
  frequency=cycle)``. Prefix a pre-training phase with
  ``optax.join_schedules`` (and shift ``start`` by its length).

  Args:
    max_lr: the paper's ``alpha_1`` (>= 0).
    min_lr: the paper's ``alpha_2`` (>= 0).
    cycle: the cycle length ``c`` in steps (>= 1).

  Returns:
    An optax schedule.

  Raises:
    ValueError: if an argument is out of range.

  Example:
    >>> import jaxdrop
    >>> lr = jaxdrop.cyclic_swa_schedule(0.05, 0.01, cycle=4)
    >>> [round(float(lr(c)), 3) for c in range(6)]
    [0.04, 0.03, 0.02, 0.01, 0.04, 0.03]
  """
  max_lr = _number(max_lr, "max_lr", low=0.0)
  min_lr = _number(min_lr, "min_lr", low=0.0)
  cycle = _integer(cycle, "cycle", minimum=1)

  def schedule(count):
    t = (jnp.asarray(count) % cycle + 1).astype(jnp.float32) / cycle
    return (1 - t) * jnp.float32(max_lr) + t * jnp.float32(min_lr)

  return schedule


def _batch_norm_statistics(model: nn.Module, variables, x, apply_kwargs: dict, unbiased: bool):
  """``{BatchNorm path: (batch mean, batch variance)}`` of one forward pass of ``model`` on ``x``."""
  found: dict[tuple[str, ...], tuple[jax.Array, jax.Array]] = {}

  def capture(next_fun, args, kwargs, context):
    module = context.module
    batch_norm = isinstance(module, nn.BatchNorm) and context.method_name == "__call__"
    if batch_norm and not module.is_initializing():
      y = args[0] if args else kwargs["x"]
      running = args[1] if len(args) > 1 else kwargs.get("use_running_average")
      if not nn.merge_param("use_running_average", module.use_running_average, running):
        # The statistics flax's BatchNorm computes for this batch (the same call as in its __call__).
        feature_axes = _normalization._canonicalize_axes(y.ndim, module.axis)
        axes = tuple(i for i in range(y.ndim) if i not in feature_axes)
        mask = kwargs.get("mask")
        mean, var = _normalization._compute_stats(
            y, axes, dtype=module.dtype, axis_name=module.axis_name,
            axis_index_groups=module.axis_index_groups, use_fast_variance=module.use_fast_variance,
            mask=mask, force_float32_reductions=module.force_float32_reductions)
        if unbiased:  # torch's running_var: n / (n - 1) times the biased batch variance
          n = math.prod(y.shape[a] for a in axes) if mask is None else jnp.sum(
              jnp.broadcast_to(mask, y.shape), axis=axes)
          n = jnp.asarray(n, var.dtype)
          var = var * n / jnp.maximum(n - 1, 1)
        if module.path in found:
          raise ValueError(f"update_bn: the BatchNorm at {'/'.join(module.path)} ran twice in one forward"
                           " pass; torch's update_bn has no meaning for a shared one: average its statistics"
                           " yourself.")
        found[module.path] = (mean, var)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    model.apply(variables, x, mutable=["batch_stats"], **apply_kwargs)
  return found


def update_bn(
    model: nn.Module,
    variables: Any,
    batches: Iterable[Any],
    *,
    unbiased: bool = False,
    **apply_kwargs: Any,
) -> Any:
  """Recomputes a linen model's BatchNorm statistics on averaged weights, as torch's ``swa_utils.update_bn``.

  Torch resets every BatchNorm's running statistics, sets its momentum to
  ``None`` (a cumulative, equal-weight average over batches) and runs the
  model in training mode over the loader. Here each batch runs once through
  ``model.apply(variables, x, mutable=["batch_stats"], **apply_kwargs)``
  (pass what turns training on, e.g. ``train=True``, and any ``rngs``); the
  statistics of each ``nn.BatchNorm`` that normalizes with batch statistics
  are those its own ``__call__`` computes (caught by ``nn.intercept_methods``),
  and the new ``mean`` and ``var`` are their means over the batches, each
  batch weighted equally (as torch's, whatever the batch size). Differences
  from torch: flax's batch variance is biased (divided by ``n``) where torch's
  ``running_var`` averages unbiased ones (``n - 1``); ``unbiased=True`` gives
  torch's. Each batch's statistics come from one jitted forward pass (one
  compile per batch shape).

  Args:
    model: the flax.linen module.
    variables: its variables (``{"params": averaged params, "batch_stats": ...}``);
      left untouched.
    batches: an iterable of inputs, or of tuples/lists whose first element is
      the input (torch's convention).
    unbiased: average unbiased batch variances (torch's ``running_var``).
    **apply_kwargs: more arguments of ``model.apply`` (e.g. ``train=True``, ``rngs=...``).

  Returns:
    ``variables`` with new ``batch_stats`` for every BatchNorm that ran in
    training mode (the others keep theirs).

  Raises:
    ValueError: if ``batches`` is empty, or no BatchNorm computed batch statistics.

  Example:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, jaxdrop
    >>> model = nn.BatchNorm(use_running_average=False)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 1)))
    >>> batches = [jnp.array([[0.0], [2.0]]), jnp.array([[4.0], [8.0]])]
    >>> stats = jaxdrop.update_bn(model, variables, batches)["batch_stats"]
    >>> stats["mean"].tolist(), stats["var"].tolist()  # means 1 and 6, variances 1 and 4
    ([3.5], [2.5])
  """
  totals: dict[tuple[str, ...], list] = {}
  count = 0
  statistics = jax.jit(lambda v, x: _batch_norm_statistics(model, v, x, apply_kwargs, unbiased))
  for batch in batches:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    stats = statistics(variables, x)
    if count and stats.keys() != totals.keys():
      raise ValueError(f"update_bn: batch {count} ran other BatchNorm layers than the first batch: give every"
                       " batch the same structure.")
    for path, (mean, var) in stats.items():
      sums = totals.setdefault(path, [jnp.zeros_like(mean), jnp.zeros_like(var)])
      sums[0], sums[1] = sums[0] + mean, sums[1] + var
    count += 1
  if count == 0:
    raise ValueError("update_bn: batches is empty: pass at least one batch of inputs.")
  if not totals:
    raise ValueError("update_bn: no BatchNorm computed batch statistics: pass the apply argument that turns"
                     " training on (e.g. train=True), or the model has no nn.BatchNorm.")
  out = dict(variables)  # a new top-level container; the other collections keep their leaves
  stats = _unfreeze(out.get("batch_stats", {}))
  for path, (mean_sum, var_sum) in totals.items():
    node = stats
    for name in path:
      node = node.setdefault(name, {})
    node["mean"] = (mean_sum / count).astype(node["mean"].dtype if "mean" in node else mean_sum.dtype)
    node["var"] = (var_sum / count).astype(node["var"].dtype if "var" in node else var_sum.dtype)
  out["batch_stats"] = stats
  return out


def _unfreeze(tree):
  """Nested dicts (new containers) of a dict or FrozenDict tree, the leaves shared."""
  if not hasattr(tree, "items"):
    return tree
  return {k: _unfreeze(v) for k, v in tree.items()}
