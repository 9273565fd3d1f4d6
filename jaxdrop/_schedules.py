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

  Example:
    >>> import jaxdrop
    >>> schedule = jaxdrop.early_dropout(0.1, 100)
    >>> round(float(schedule(99)), 6), round(float(schedule(100)), 6)
    (0.1, 0.0)
  """
  rate = _checks.check_rate(rate)
  return optax.piecewise_constant_schedule(rate, {int(stop_step): 0.0})


def late_dropout(rate: float, start_step: int) -> optax.Schedule:
  """0 until ``start_step``, then ``rate``: late dropout (Liu et al., 2023, against over-fitting).

  Example:
    >>> import jaxdrop
    >>> schedule = jaxdrop.late_dropout(0.1, 100)
    >>> round(float(schedule(99)), 6), round(float(schedule(100)), 6)
    (0.0, 0.1)
  """
  rate = _checks.check_rate(rate)
  return optax.join_schedules([optax.constant_schedule(0.0), optax.constant_schedule(rate)], [int(start_step)])
