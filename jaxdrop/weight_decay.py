"""Weight decay as optax chains that leave biases and normalization scales alone.

Two kinds of decay, both built from optax's own transforms:

* **coupled** (L2 regularization folded into the gradient): ``g + wd * w`` goes
  through the optimizer. It is what ``torch.optim.SGD(weight_decay=wd)`` and
  ``torch.optim.Adam(weight_decay=wd)`` do, and for SGD one step is exactly a
  step on ``loss + wd * jaxdrop.l2_penalty(params)``.
* **decoupled** (Loshchilov & Hutter, 2019): the decay ``-lr * wd * w`` is added
  after the optimizer's own scaling, so adaptive optimizers do not rescale it
  (AdamW; SGDW for SGD with momentum). Note the decay is multiplied by the
  learning rate, as in ``torch.optim.AdamW`` and ``optax.adamw``.

Every function takes a ``mask`` (see :mod:`jaxdrop.param_masks`); the default
decays weight matrices and conv kernels only, which for seed 004's concise
example is ``torch.optim.SGD([{"params": weight, "weight_decay": wd}, {"params": bias}])``.
"""

from __future__ import annotations

import math

import optax

from jaxdrop.param_masks import Mask, optax_mask

__all__ = ["adam", "adamw", "add_weight_decay", "sgd"]


def _check_decay(weight_decay):
  if isinstance(weight_decay, (int, float)) and not (weight_decay >= 0 and math.isfinite(weight_decay)):
    raise ValueError(f"weight_decay must be a finite number >= 0, got weight_decay={weight_decay!r}.")


def _no_decay(weight_decay) -> bool:
  return isinstance(weight_decay, (int, float)) and weight_decay == 0


def add_weight_decay(weight_decay: optax.ScalarOrSchedule, mask: Mask = None) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` with jaxdrop's default mask (weights only).

  Adds ``weight_decay * w`` to the updates of the selected leaves. Put it before
  an optimizer for coupled decay, or between a ``scale_by_*`` transform and
  ``optax.scale_by_learning_rate`` for decoupled decay.

  Args:
    weight_decay: a non-negative float or a schedule.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation`` (it needs ``params`` in ``update``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxdrop
    >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    >>> tx = jaxdrop.add_weight_decay(0.1)
    >>> grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> updates["kernel"], updates["bias"]
    (Array([[0.1, 0.1],
           [0.1, 0.1]], dtype=float32), Array([0., 0.], dtype=float32))
  """
  _check_decay(weight_decay)
  return optax.add_decayed_weights(weight_decay, mask=optax_mask(mask))


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled: bool = False,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """SGD (optionally with momentum) and masked weight decay.

  Coupled (default): ``chain(add_weight_decay(wd), optax.sgd(lr, momentum))``,
  i.e. ``torch.optim.SGD(lr, momentum, weight_decay=wd)`` with the decay on the
  weights only. Decoupled: ``chain(optax.trace(momentum), add_weight_decay(wd),
  optax.scale_by_learning_rate(lr))`` (SGDW), where the decay bypasses the
  momentum buffer. Without momentum both are the same step.

  Args:
    learning_rate: a float or a schedule.
    momentum: momentum coefficient, or ``None`` for plain SGD.
    nesterov: use Nesterov momentum.
    weight_decay: decay coefficient ``wd >= 0`` (float or schedule).
    decoupled: coupled (``False``) or decoupled (``True``) decay.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxdrop
    >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    >>> tx = jaxdrop.sgd(0.5, weight_decay=0.1)
    >>> grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["kernel"]  # (1 - 0.5 * 0.1) * w
    Array([[0.95, 0.95],
           [0.95, 0.95]], dtype=float32)
  """
  _check_decay(weight_decay)
  if not decoupled:
    base = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
    return base if _no_decay(weight_decay) else optax.chain(add_weight_decay(weight_decay, mask), base)
  return optax.chain(
      optax.trace(momentum, nesterov=nesterov) if momentum else optax.identity(),
      add_weight_decay(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """Adam with coupled L2 decay, as ``torch.optim.Adam(weight_decay=wd)``.

  The decay term ``wd * w`` is added to the gradient and then rescaled by
  Adam's second-moment estimate like any gradient, so large weights with large
  gradients are decayed less; prefer :func:`adamw` for that reason.

  Args:
    learning_rate: a float or a schedule.
    b1: first-moment decay.
    b2: second-moment decay.
    eps: term added to the denominator.
    weight_decay: L2 coefficient ``wd >= 0``.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jaxdrop
    >>> tx = jaxdrop.adam(1e-3, weight_decay=1e-4)
  """
  _check_decay(weight_decay)
  base = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  return base if _no_decay(weight_decay) else optax.chain(add_weight_decay(weight_decay, mask), base)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """AdamW (decoupled decay): ``optax.adamw`` with jaxdrop's default mask.

  The update is ``-lr * (adam_update + wd * w)``: the decay is multiplied by
  the learning rate (as in ``torch.optim.AdamW``) but not by Adam's scaling.

  Args:
    learning_rate: a float or a schedule.
    b1: first-moment decay.
    b2: second-moment decay.
    eps: term added to the denominator.
    weight_decay: decay coefficient ``wd >= 0`` (optax's default 1e-4).
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jaxdrop
    >>> tx = jaxdrop.adamw(1e-3, weight_decay=1e-2)
  """
  _check_decay(weight_decay)
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=optax_mask(mask))
