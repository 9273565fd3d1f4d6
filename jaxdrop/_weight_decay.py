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

Two options of the decoupled forms (``adamw``, ``sgd(decoupled=True)``) go
beyond optax:

* ``independent=True``: Loshchilov & Hutter's own form, where the decay follows
  the schedule multiplier ``eta_t = lr_t / peak_learning_rate`` and not the
  learning rate itself: ``w <- w - lr_t * u_t - eta_t * wd * w``. It is coupled
  decay with the coefficient ``wd / peak_learning_rate``, which is how it is
  built.
* ``cautious=True``: cautious weight decay (Chen et al., 2025): a coordinate is
  decayed only where ``u_t * w >= 0``, ``u_t`` being the optimizer's direction.

``weight_decay`` (and every group's rate) may be an optax schedule in every
form: it is then evaluated at the transform's own step count.

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
import jax.numpy as jnp
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


def _check_variants(*, independent, peak_learning_rate, cautious, learning_rate, decoupled=True):
  """Checks the decoupled forms' options; returns the peak learning rate (None without ``independent``)."""
  _check_flag(independent, "independent")
  _check_flag(cautious, "cautious")
  for flag, name in ((independent, "independent"), (cautious, "cautious")):
    if flag and not decoupled:
      raise ValueError(f"{name}=True needs decoupled=True (it is a form of decoupled decay).")
  if not independent:
    if peak_learning_rate is not None:
      raise ValueError(f"peak_learning_rate is only read with independent=True, got peak_learning_rate="
                       f"{peak_learning_rate!r}; pass independent=True or drop it.")
    return None
  if peak_learning_rate is None:
    if not isinstance(learning_rate, numbers.Real):  # a schedule or an array (NumPy scalars are numbers)
      raise ValueError(
          "independent=True with a learning_rate schedule (or an array, as optax.inject_hyperparams passes"
          " it) needs peak_learning_rate=: the decay is multiplied by learning_rate(t) / peak_learning_rate.")
    if learning_rate == 0:
      raise ValueError("independent=True with learning_rate=0 needs peak_learning_rate > 0: the decay is"
                       " multiplied by learning_rate / peak_learning_rate.")
    return float(learning_rate)
  number = check_scalar(peak_learning_rate, name="peak_learning_rate",
                        meaning="the learning rate at which the decay is weight_decay per step")
  if number is not None and not (number > 0 and math.isfinite(number)):
    raise ValueError(
        f"peak_learning_rate must be a finite number > 0, got peak_learning_rate={peak_learning_rate!r}.")
  return float(peak_learning_rate) if isinstance(peak_learning_rate, numbers.Real) else peak_learning_rate


def _per_peak(weight_decay, peak):
  """``weight_decay / peak`` (a schedule stays a schedule); ``weight_decay`` itself when ``peak`` is None."""
  if peak is None:
    return weight_decay
  if callable(weight_decay) and not hasattr(weight_decay, "dtype"):
    return lambda count: weight_decay(count) / peak
  if isinstance(weight_decay, (numbers.Real, np.number)) and isinstance(peak, float):
    return float(weight_decay) / peak  # a Python float, weakly typed as the decay itself would be
  return weight_decay / peak


def _rescaled_groups(groups, peak):
  return tuple((selector, _per_peak(rate, peak)) for selector, rate in _check_groups(groups))


def _cautious_decayed_weights(weight_decay) -> optax.GradientTransformation:
  """``optax.add_decayed_weights``, but adding ``weight_decay * w`` only where ``sign(u) * sign(w) >= 0``.

  Its state is ``optax.add_decayed_weights``' own (a step count for a schedule), so the two swap.
  """
  plain = optax.add_decayed_weights(weight_decay)

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError(optax.NO_PARAMS_MSG)
    scheduled = callable(weight_decay) and not hasattr(weight_decay, "dtype")
    new_state = state._replace(count=optax.safe_increment(state.count)) if scheduled else state
    if isinstance(weight_decay, (int, float)) and weight_decay == 0:
      return updates, new_state
    rate = weight_decay(state.count) if scheduled else weight_decay

    def decay(u, w):
      if u is None:
        return None
      if jnp.iscomplexobj(u) or jnp.iscomplexobj(w):
        raise TypeError(f"cautious=True needs real parameters, got a leaf of dtype {jnp.result_type(w)};"
                        " leave complex leaves out with mask=.")
      # sign(u) * sign(w) rather than u * w: a product of tiny values would underflow to -0.0 >= 0.
      agree = jnp.sign(u) * jnp.sign(w) >= 0
      return jnp.where(agree, u + rate * w, u)  # exactly optax's u + s * w where decayed, u elsewhere

    return jax.tree.map(decay, updates, params, is_leaf=lambda x: x is None), new_state

  return optax.GradientTransformation(plain.init, update_fn)


def _decayed_weights(weight_decay, mask, *, cautious: bool) -> optax.GradientTransformation:
  """One rate's decay over ``mask`` (``None``: every leaf), cautious or not."""
  if not cautious:
    return optax.add_decayed_weights(weight_decay, mask=mask)
  transform = _cautious_decayed_weights(weight_decay)
  return transform if mask is None else optax.masked(transform, mask)


def _no_decay(weight_decay, groups) -> bool:
  return isinstance(weight_decay, (numbers.Real, np.number)) and weight_decay == 0 and not groups


def _decay_or_pass(weight_decay, mask: Mask, groups, *, cautious=False) -> optax.GradientTransformation:
  """The coupled decay, or with no decay a pass-through with the same state structure.

  So a chain's state does not depend on the decay's value: ``sgd(lr)`` and
  ``optax.inject_hyperparams(sgd)(lr)`` (where the decay is an array, 0 or not)
  have interchangeable states.
  """
  if not _no_decay(weight_decay, groups):
    return add_weight_decay(weight_decay, mask, groups=groups, cautious=cautious)
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
    weight_decay: optax.ScalarOrSchedule, mask: Mask = None, *, groups: Groups = (), cautious: bool = False
) -> optax.GradientTransformation:
  """``optax.add_decayed_weights`` with jaxdrop's default mask, and per-group rates.

  Adds ``weight_decay * w`` to the updates of the selected leaves. Put it before
  an optimizer for coupled decay, or between a ``scale_by_*`` transform and
  ``optax.scale_by_learning_rate`` for decoupled decay. With ``groups``, it is
  ``optax.multi_transform`` over one ``add_decayed_weights`` per group.

  With ``cautious=True`` (cautious weight decay, Chen et al., 2025), an
  incoming update ``u`` becomes ``u + wd * I(sign(u) * sign(w) >= 0) * w``,
  elementwise: coordinates where ``u`` and ``w`` have opposite signs are left
  as they are (bitwise), the others get exactly the plain decay. ``u`` must be
  the optimizer's step direction (the step being ``-lr * u``), so put it after
  the ``scale_by_*`` transform, as :func:`adamw` and :func:`sgd` do.

  Args:
    weight_decay: a non-negative float or a schedule.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).
    groups: ``(selector, rate)`` pairs (or a mapping): the first selector that
      matches a leaf gives its rate, whatever ``mask`` says; a selector is a
      name (str), an ``re.Pattern`` searched in the ``/``-joined path, or a
      predicate (see :func:`jaxdrop.decay_mask`).
    cautious: decay only where the update and the parameter agree in sign
      (or one of them is zero), as above.

  Returns:
    An ``optax.GradientTransformation`` (it needs ``params`` in ``update``);
    its state is that of ``optax.add_decayed_weights``, cautious or not.

  Raises:
    TypeError: if ``weight_decay`` or a group's rate is not a real number nor a
      schedule (a bool, a complex number, a string, ``None``, a list), or
      ``cautious`` is not a bool; with ``cautious``, at ``update`` on a
      complex leaf.
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
  _check_flag(cautious, "cautious")
  if not groups:  # all_params: optax's unmasked transform (it accepts None updates)
    return _decayed_weights(weight_decay, None if mask is all_params else optax_mask(mask), cautious=cautious)
  transforms = {f"group{i}": _decayed_weights(rate, None, cautious=cautious)
                for i, (_, rate) in enumerate(groups)}
  transforms.update(default=_decayed_weights(weight_decay, None, cautious=cautious), none=optax.identity())
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
    independent: bool = False,
    peak_learning_rate: float | None = None,
    cautious: bool = False,
) -> optax.GradientTransformation:
  """SGD (optionally with momentum) and masked weight decay.

  Coupled (default): ``chain(add_weight_decay(wd), optax.sgd(lr, momentum))``,
  i.e. ``torch.optim.SGD(lr, momentum, weight_decay=wd)`` with the decay on the
  weights only. Decoupled: ``chain(optax.trace(momentum), add_weight_decay(wd),
  optax.scale_by_learning_rate(lr))`` (SGDW), where the decay bypasses the
  momentum buffer. Without momentum both are the same step.

  The decoupled form takes ``independent`` and ``cautious``, as :func:`adamw`
  (there ``u_t`` is the momentum buffer, or the gradient without momentum).

  Args:
    learning_rate: a float or a schedule.
    momentum: momentum coefficient, or ``None`` for plain SGD.
    nesterov: use Nesterov momentum.
    weight_decay: decay coefficient ``wd >= 0`` (float or schedule).
    decoupled: coupled (``False``) or decoupled (``True``) decay.
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).
    groups: per-group decay rates (see :func:`add_weight_decay`).
    accumulator_dtype: dtype of the momentum buffer (as ``optax.sgd``).
    independent: with ``decoupled``, the decay follows ``learning_rate(t) /
      peak_learning_rate`` instead of the learning rate (see :func:`adamw`).
    peak_learning_rate: with ``independent``, the learning rate at which the
      decay is ``weight_decay`` per step; required when ``learning_rate`` is a
      schedule or an array, and ``learning_rate`` itself by default.
    cautious: with ``decoupled``, decay only the coordinates where the
      update and the parameter agree in sign (see :func:`adamw`).

  Returns:
    An ``optax.GradientTransformation``; its state's structure does not
    depend on the values of ``weight_decay`` and ``momentum`` (only on
    whether a momentum is given), so it can be wrapped in
    ``optax.inject_hyperparams``.

  Raises:
    TypeError: if ``learning_rate``, ``momentum``, ``weight_decay`` or
      ``peak_learning_rate`` is not a real number (0-d arrays and traced
      scalars included; schedules for the learning rate and the decay), or
      ``nesterov``/``decoupled``/``independent``/``cautious`` not a bool.
    ValueError: if one of them is negative, NaN, infinite or not a scalar
      (``peak_learning_rate`` must be > 0); if ``independent`` or ``cautious``
      is set without ``decoupled``, ``peak_learning_rate`` without
      ``independent``, or ``independent`` with a scheduled (or array)
      learning rate and no ``peak_learning_rate``.

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
    >>> params, grads = {"kernel": jnp.array([1.0, -1.0])}, {"kernel": jnp.array([1.0, 1.0])}
    >>> tx = jaxdrop.sgd(0.1, weight_decay=0.5, decoupled=True, independent=True, cautious=True)
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> [round(u, 6) for u in updates["kernel"].tolist()]  # -0.1 * g, and -0.5 * w where g * w >= 0
    [-0.6, -0.1]
  """
  _check_learning_rate(learning_rate)
  if momentum is not None:
    _check_nonnegative(momentum, "momentum", "the momentum coefficient, or None for plain SGD")
  _check_flag(nesterov, "nesterov")
  _check_flag(decoupled, "decoupled")
  _check_decay(weight_decay)
  peak = _check_variants(independent=independent, peak_learning_rate=peak_learning_rate, cautious=cautious,
                         learning_rate=learning_rate, decoupled=decoupled)
  momentum_or_pass = (optax.identity() if momentum is None
                      else optax.trace(momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype))
  if not decoupled:
    base = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
    return optax.chain(_decay_or_pass(weight_decay, mask, groups), base)
  decay = _decay_or_pass(_per_peak(weight_decay, peak), mask, _rescaled_groups(groups, peak),
                         cautious=cautious)
  return optax.chain(momentum_or_pass, decay, optax.scale_by_learning_rate(learning_rate))


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
    independent: bool = False,
    peak_learning_rate: float | None = None,
    cautious: bool = False,
) -> optax.GradientTransformation:
  """AdamW (decoupled decay): ``optax.adamw`` with jaxdrop's default mask.

  With ``u_t = m_hat_t / (sqrt(v_hat_t) + eps)``, Adam's direction (the step
  without decay is ``-lr_t * u_t``), elementwise:

  * default, as ``torch.optim.AdamW`` and ``optax.adamw``: the decay is
    multiplied by the learning rate but not by Adam's scaling,
    ``w <- w - lr_t * u_t - lr_t * wd * w``;
  * ``independent=True``, Loshchilov & Hutter's (2019) own form: the decay
    follows the schedule multiplier ``eta_t = lr_t / peak_learning_rate`` only,
    ``w <- w - lr_t * u_t - eta_t * wd * w``; at a constant learning rate
    ``eta_t = 1`` and the decay is ``wd * w`` per step, so ``wd`` keeps its
    meaning when ``lr`` is tuned. It is the default form with the coefficient
    ``wd / peak_learning_rate`` (so equal to it up to rounding, and built so);
  * ``cautious=True``, cautious weight decay (Chen et al., 2025,
    arXiv:2510.12402): ``w <- w - lr_t * u_t - c_t * I(u_t * w >= 0) * w``,
    with ``c_t`` as above (``lr_t * wd`` or ``eta_t * wd``): the coordinates
    where ``u_t`` and ``w`` have opposite signs are not decayed (the sign test
    is ``sign(u_t) * sign(w) >= 0``, so ties, ``u_t = 0``, decay as in the
    paper's ``I(u_t x_t >= 0)``).

  ``independent`` and ``cautious`` combine, and work with ``mask``, ``groups``
  (each group's rate is rescaled alike), schedules for ``weight_decay`` and
  ``optax.inject_hyperparams`` (give ``peak_learning_rate`` there, as the
  learning rate arrives as an array).

  Args:
    learning_rate: a float or a schedule.
    b1: first-moment decay.
    b2: second-moment decay.
    eps: term added to the denominator.
    weight_decay: decay coefficient ``wd >= 0`` (optax's default 1e-4).
    mask: which leaves to decay (default :func:`jaxdrop.weights_only`).
    groups: per-group decay rates (see :func:`add_weight_decay`).
    mu_dtype: dtype of the first moment (as ``optax.adamw``).
    independent: the decay follows ``learning_rate(t) / peak_learning_rate``
      instead of the learning rate.
    peak_learning_rate: with ``independent``, the learning rate at which the
      decay is ``weight_decay`` per step (a warm-up-cosine schedule's
      ``peak_value``); required when ``learning_rate`` is a schedule or an
      array, and ``learning_rate`` itself by default.
    cautious: decay only the coordinates where Adam's direction and the
      parameter agree in sign.

  Returns:
    An ``optax.GradientTransformation``, ``optax.adamw``'s chain (its state's
    structure does not depend on ``independent`` and ``cautious``).

  Raises:
    TypeError: if a hyperparameter is not a real number (or, for
      ``learning_rate`` and ``weight_decay``, a schedule), or ``independent``
      or ``cautious`` is not a bool.
    ValueError: if ``learning_rate``, ``eps`` or ``weight_decay`` is negative
      or not finite, ``peak_learning_rate`` is not > 0, ``b1`` or ``b2`` is
      outside ``[0, 1)``, or one is not a scalar; if ``peak_learning_rate`` is
      given without ``independent``, or ``independent`` with a scheduled (or
      array) learning rate and no ``peak_learning_rate``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import jaxdrop
    >>> tx = jaxdrop.adamw(1e-3, weight_decay=1e-2)
    >>> schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 1000)
    >>> tx = jaxdrop.adamw(schedule, weight_decay=1e-4, independent=True, peak_learning_rate=1e-3)
    >>> tx = jaxdrop.adamw(1e-3, weight_decay=1e-4, independent=True, cautious=True)
  """
  _check_adam(learning_rate, b1, b2, eps, weight_decay)
  peak = _check_variants(independent=independent, peak_learning_rate=peak_learning_rate, cautious=cautious,
                         learning_rate=learning_rate)
  weight_decay, groups = _per_peak(weight_decay, peak), _rescaled_groups(groups, peak)
  if not groups and not cautious:
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mu_dtype=mu_dtype,
                       mask=None if mask is all_params else optax_mask(mask))
  return optax.chain(  # optax.adamw's own chain, with the grouped or cautious decay
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype),
      add_weight_decay(weight_decay, mask, groups=groups, cautious=cautious),
      optax.scale_by_learning_rate(learning_rate),
  )
