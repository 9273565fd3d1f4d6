"""SWA's learning rates as optax schedules: torch's ``SWALR`` and the SWA paper's cyclic rate."""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import optax

from jaxdrop._averaging import _integer, _number
from jaxdrop._checks import check_scalar

__all__ = ["cyclic_swa_schedule", "swa_lr_schedule"]


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
