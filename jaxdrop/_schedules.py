"""Rates that change with depth or during training: stochastic-depth rates and dropout schedules.

Every jaxdrop layer takes its rate at call time as well (``layer(x, rate=r)``),
and ``r`` may be a traced scalar, so a rate can follow any ``optax`` schedule
of the training step inside one compiled step or scan::

    schedule = optax.linear_schedule(0.0, 0.1, transition_steps=1_000)  # warm-up
    y = jdl.Dropout(0.1)(x, deterministic=False, rate=schedule(step))
"""

from __future__ import annotations

import optax

from jaxdrop import _checks

__all__ = ["drop_path_rates", "early_dropout", "late_dropout"]


def _check_step(step, name: str) -> int:
  """A step count known at build time: an int (NumPy's, a 0-d array, an integral float such as ``1e3``),
  at least 0."""
  value = _checks.concrete_scalar(step)  # None for bools, strings, None, traced values
  if value is None:
    raise TypeError(f"{name} must be an int (a step count known when the schedule is built), got"
                    f" {type(step).__name__} {step!r}.")
  if not (value.is_integer() and value >= 0):  # also refuses NaN and inf
    raise ValueError(f"{name} must be a whole number of steps >= 0, got {name}={step!r}.")
  return int(value)


def drop_path_rates(max_rate: float, depth: int, *, start: float = 0.0) -> tuple[float, ...]:
  """Per-block drop-path rates rising linearly from ``start`` to ``max_rate`` (timm's ``drop_path_rate``).

  Stochastic depth (Huang et al., 2016) drops deep blocks more often than
  shallow ones: block ``i`` of ``depth`` gets
  ``start + (max_rate - start) * i / (depth - 1)``, as
  ``torch.linspace(0, drop_path_rate, depth)`` in timm's vision transformers.

  Args:
    max_rate: the drop probability of the last block (not a keep probability).
    depth: the number of blocks.
    start: the rate of the first block.

  Returns:
    ``depth`` Python floats (pass ``jnp.asarray(...)`` to an ``nn.scan`` stack
    as a scanned input, and each layer's ``rate=`` at call time).

  Example:
    >>> import jaxdrop
    >>> [round(r, 6) for r in jaxdrop.drop_path_rates(0.1, 5)]
    [0.0, 0.025, 0.05, 0.075, 0.1]
  """
  max_rate = _checks.check_rate(max_rate, name="max_rate")
  start = _checks.check_rate(start, name="start")
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
    raise ValueError(f"depth must be a positive integer (the number of blocks), got depth={depth!r}.")
  if depth == 1:
    return (max_rate,)
  return tuple(start + (max_rate - start) * i / (depth - 1) for i in range(depth))


def early_dropout(rate: float, stop_step: int) -> optax.Schedule:
  """``rate`` until ``stop_step``, then 0: early dropout (Liu et al., 2023, against under-fitting).

  Raises:
    ValueError: if ``rate`` is outside ``[0, 1]`` or ``stop_step`` is negative or not whole.
    TypeError: if ``rate`` is not a real number or ``stop_step`` not an int (a bool, a string).

  Example:
    >>> import jaxdrop
    >>> schedule = jaxdrop.early_dropout(0.1, 100)
    >>> round(float(schedule(99)), 6), round(float(schedule(100)), 6)
    (0.1, 0.0)
  """
  rate = _checks.check_rate(rate)
  return optax.piecewise_constant_schedule(rate, {_check_step(stop_step, "stop_step"): 0.0})


def late_dropout(rate: float, start_step: int) -> optax.Schedule:
  """0 until ``start_step``, then ``rate``: late dropout (Liu et al., 2023, against over-fitting).

  Raises:
    ValueError: if ``rate`` is outside ``[0, 1]`` or ``start_step`` is negative or not whole.
    TypeError: if ``rate`` is not a real number or ``start_step`` not an int (a bool, a string).

  Example:
    >>> import jaxdrop
    >>> schedule = jaxdrop.late_dropout(0.1, 100)
    >>> round(float(schedule(99)), 6), round(float(schedule(100)), 6)
    (0.0, 0.1)
  """
  rate = _checks.check_rate(rate)
  start_step = _check_step(start_step, "start_step")
  return optax.join_schedules([optax.constant_schedule(0.0), optax.constant_schedule(rate)], [start_step])
