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

Every function takes a ``mask`` (see :func:`jaxdrop.decay_mask`; the default
decays weights, kernels and embeddings, never biases, normalization scales or
statistics) and ``groups``, per-group decay rates as torch's parameter groups:
``[(selector, rate), ...]``, where the first matching selector gives a leaf its
rate (``groups=[("pos_embedding", 0.0), (re.compile("^head/"), 1e-3)]``), and
leaves in no group get ``weight_decay`` if ``mask`` selects them.

The hyperparameters are checked when the transform is built: each is one real
number (a Python or NumPy number, a 0-d real array, a traced scalar, as
``optax.inject_hyperparams`` passes them) or, for the learning rate and the
decay, an optax schedule; bools, complex numbers, strings, ``None`` and lists
are refused with an error that names the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import optax

from jaxdrop._checks import check_scalar
from jaxdrop._param_masks import (
  Mask,
  Selector,
  _check_selector,
  all_params,
  optax_mask,
  resolve_mask,
  selects,
)

Groups = Sequence[tuple[Selector, optax.ScalarOrSchedule]] | Mapping[Selector, optax.ScalarOrSchedule]

__all__ = ["adam", "adamw", "add_weight_decay", "sgd"]


def _check_nonnegative(value, name: str, meaning: str, *, schedule: bool = False, where: str = ""):
  """A real number (or a schedule, where ``schedule``), finite and >= 0 when known at build time."""
  number = check_scalar(value, name=name, meaning=meaning, schedule=schedule, where=where)
  if number is not None and not (number >= 0 and math.isfinite(number)):
    raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}{where}.")


def _check_decay(weight_decay, where: str = ""):
  _check_nonnegative(weight_decay, "weight_decay", "the decay coefficient", schedule=True, where=where)


def _check_learning_rate(learning_rate):
  _check_nonnegative(learning_rate, "learning_rate", "the step size", schedule=True)


def _check_beta(value, name: str):
  number = check_scalar(value, name=name, meaning="a moment's decay rate, in [0, 1)")
  if number is not None and not 0 <= number < 1:  # also refuses NaN; at 1 Adam's bias correction is 0/0
    raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}.")


def _check_adam(learning_rate, b1, b2, eps, weight_decay):
  _check_learning_rate(learning_rate)
  _check_beta(b1, "b1")
  _check_beta(b2, "b2")
  _check_nonnegative(eps, "eps", "the term added to the denominator")
  _check_decay(weight_decay)


def _check_flag(value, name: str):
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}.")


def _no_decay(weight_decay, groups) -> bool:
  return isinstance(weight_decay, (numbers.Real, np.number)) and weight_decay == 0 and not groups


def _decay_or_pass(weight_decay, mask: Mask, groups) -> optax.GradientTransformation:
  """The coupled decay, or with no decay a pass-through with the same state structure.

  So a chain's state does not depend on the decay's value: ``sgd(lr)`` and
  ``optax.inject_hyperparams(sgd)(lr)`` (where the decay is an array, 0 or not)
  have interchangeable states.
  """
  if not _no_decay(weight_decay, groups):
    return add_weight_decay(weight_decay, mask, groups=groups)
  if mask is all_params:
    return optax.identity()  # add_decayed_weights' own (unmasked) state
  return optax.masked(optax.identity(), optax_mask(mask))


def _check_groups(groups: Groups) -> tuple[tuple[Selector, optax.ScalarOrSchedule], ...]:
  items = tuple(groups.items()) if isinstance(groups, Mapping) else tuple(groups)
  checked: list[tuple[Selector, optax.ScalarOrSchedule]] = []
  for item in items:
    if not (isinstance(item, tuple) and len(item) == 2):
      raise TypeError(f"groups takes (selector, weight_decay) pairs or a mapping, got {item!r}.")
    selector, rate = item
    _check_decay(rate, where=f" for groups[{len(checked)}] ({selector!r})")
    checked.append((_check_selector(selector, "groups"), rate))
  return tuple(checked)


def _group_labels(groups, mask: Mask):
  """``params -> labels``: ``"group<i>"`` for the first matching group, else ``"default"`` or ``"none"``."""

  def labels(params):
    selected = resolve_mask(params, mask)

    def label(path, leaf, flag):
      for i, (selector, _) in enumerate(groups):
        if selects(selector, path, leaf):
          return f"group{i}"
      return "default" if flag else "none"

    return jax.tree_util.tree_map_with_path(label, params, selected)

  return labels


def add_weight_decay(
    weight_decay: optax.ScalarOrSchedule, mask: Mask = None, *, groups: Groups = ()
) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` with jaxdrop's default mask, and per-group rates.

  Adds ``weight_decay * w`` to the updates of the selected leaves. Put it before
  an optimizer for coupled decay, or between a ``scale_by_*`` transform and
  ``optax.scale_by_learning_rate`` for decoupled decay. With ``groups``, it is
  ``optax.multi_transform`` over one ``add_decayed_weights`` per group.

  Args:
    weight_decay: a non-negative float or a schedule.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).
    groups: ``(selector, rate)`` pairs (or a mapping): the first selector that
      matches a leaf gives its rate, whatever ``mask`` says; a selector is a
      name (str), an ``re.Pattern`` searched in the ``/``-joined path, or a
      predicate (see :func:`jaxdrop.decay_mask`).

  Returns:
    An ``optax.GradientTransformation`` (it needs ``params`` in ``update``).

  Raises:
    TypeError: if ``weight_decay`` or a group's rate is not a real number nor a
      schedule (a bool, a complex number, a string, ``None``, a list).
    ValueError: if one is negative, NaN or infinite, or an array of more than
      one value (for per-leaf rates use ``groups``).

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
  groups = _check_groups(groups)
  if not groups:  # all_params: optax's unmasked transform (it accepts None updates)
    return optax.add_decayed_weights(weight_decay, mask=None if mask is all_params else optax_mask(mask))
  transforms = {f"group{i}": optax.add_decayed_weights(rate) for i, (_, rate) in enumerate(groups)}
  transforms.update(default=optax.add_decayed_weights(weight_decay), none=optax.identity())
  return optax.multi_transform(transforms, _group_labels(groups, mask))


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    decoupled: bool = False,
    mask: Mask = None,
    groups: Groups = (),
    accumulator_dtype=None,
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
    groups: per-group decay rates (see :func:`add_weight_decay`).
    accumulator_dtype: dtype of the momentum buffer (as ``optax.sgd``).

  Returns:
    An ``optax.GradientTransformation``; its state's structure does not
    depend on the values of ``weight_decay`` and ``momentum`` (only on
    whether a momentum is given), so it can be wrapped in
    ``optax.inject_hyperparams``.

  Raises:
    TypeError: if ``learning_rate``, ``momentum`` or ``weight_decay`` is not a
      real number (0-d arrays and traced scalars included; schedules for the
      learning rate and the decay), or ``nesterov``/``decoupled`` not a bool.
    ValueError: if one of them is negative, NaN, infinite or not a scalar.

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
  _check_learning_rate(learning_rate)
  if momentum is not None:
    _check_nonnegative(momentum, "momentum", "the momentum coefficient, or None for plain SGD")
  _check_flag(nesterov, "nesterov")
  _check_flag(decoupled, "decoupled")
  _check_decay(weight_decay)
  momentum_or_pass = (optax.identity() if momentum is None
                      else optax.trace(momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype))
  if not decoupled:
    base = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    return optax.chain(_decay_or_pass(weight_decay, mask, groups), base)
  return optax.chain(momentum_or_pass, _decay_or_pass(weight_decay, mask, groups),
                     optax.scale_by_learning_rate(learning_rate))


def adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Mask = None,
    groups: Groups = (),
    mu_dtype=None,
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
    groups: per-group decay rates (see :func:`add_weight_decay`).
    mu_dtype: dtype of the first moment (as ``optax.adam``).

  Returns:
    An ``optax.GradientTransformation`` (its state's structure does not
    depend on the value of ``weight_decay``).

  Raises:
    TypeError: if a hyperparameter is not a real number (or, for
      ``learning_rate`` and ``weight_decay``, a schedule).
    ValueError: if ``learning_rate``, ``eps`` or ``weight_decay`` is negative
      or not finite, ``b1`` or ``b2`` is outside ``[0, 1)``, or one is not a scalar.

  Example:
    >>> import jaxdrop
    >>> tx = jaxdrop.adam(1e-3, weight_decay=1e-4)
  """
  _check_adam(learning_rate, b1, b2, eps, weight_decay)
  return optax.chain(_decay_or_pass(weight_decay, mask, groups),
                     optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype))


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    groups: Groups = (),
    mu_dtype=None,
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
    groups: per-group decay rates (see :func:`add_weight_decay`).
    mu_dtype: dtype of the first moment (as ``optax.adamw``).

  Returns:
    An ``optax.GradientTransformation``.

  Raises:
    TypeError: if a hyperparameter is not a real number (or, for
      ``learning_rate`` and ``weight_decay``, a schedule).
    ValueError: if ``learning_rate``, ``eps`` or ``weight_decay`` is negative
      or not finite, ``b1`` or ``b2`` is outside ``[0, 1)``, or one is not a scalar.

  Example:
    >>> import jaxdrop
    >>> tx = jaxdrop.adamw(1e-3, weight_decay=1e-2)
  """
  _check_adam(learning_rate, b1, b2, eps, weight_decay)
  if not groups:
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mu_dtype=mu_dtype,
                       mask=None if mask is all_params else optax_mask(mask))
  return optax.chain(  # optax.adamw's own chain, with the grouped decay
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype),
      add_weight_decay(weight_decay, mask, groups=groups),
      optax.scale_by_learning_rate(learning_rate),
  )
