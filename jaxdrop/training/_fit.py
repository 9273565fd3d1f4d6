"""``fit``: trains a :class:`~jaxdrop.training.Task`, evaluates after each epoch, checkpoints and resumes.

Randomness is a pure function of the run's seed (:func:`~jaxdrop.training.run_keys`):
the dropout key of a step is ``fold_in(dropout_key, state.step)`` and the
shuffle of an epoch ``fold_in(shuffle_key, epoch)``, so a resumed run draws the
same masks and batches as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from jaxdrop._averaging import EmaState, SwaState, averaged_params
from jaxdrop._bits import mask_generator
from jaxdrop.errors import CheckpointMismatchError, TrainingDivergedError, TrainingStopped
from jaxdrop.training import xla_cpu
from jaxdrop.training._checkpoints import Checkpoints
from jaxdrop.training._evaluate import evaluate_sums, summarize
from jaxdrop.training._optional import optional_import
from jaxdrop.training._options import FitOptions
from jaxdrop.training._progress import Progress
from jaxdrop.training._steps import make_train_epoch
from jaxdrop.training._task import Task, run_keys

__all__ = ["FitResult", "fit", "fit_seeds"]

@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns for one run: the final state and the per-epoch history."""

  state: TrainState
  history: dict[str, list[float]]
  step_losses: list[np.ndarray]  # per epoch, the training loss of every step
  execution: dict[str, Any]  # the epoch path that ran, and why (and, with an average, what was evaluated)

  @property
  def averaged_params(self) -> Any:
    """The averaged parameters of ``FitOptions.average`` (what was evaluated), or ``None`` without one."""
    if "evaluated" not in self.execution:
      return None
    return averaged_params(self.state.opt_state[-1])  # the average is the chain's last transform


def _options(options: FitOptions | None, fields: dict[str, Any]) -> FitOptions:
  if options is None:
    return FitOptions(**fields)
  return dataclasses.replace(options, **fields) if fields else options


def fit(
    task: Task,
    params: Any,
    tx: optax.GradientTransformation,
    data,
    options: FitOptions | None = None,
    *,
    seed: int,
    mesh: jax.sharding.Mesh | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
    **option_fields: Any,
) -> FitResult:
  """Trains ``params`` on ``data`` and evaluates after each epoch.

  Args:
    task: the model and loss (:class:`~jaxdrop.training.Task`).
    params: initial parameters (left untouched).
    tx: the optimizer.
    data: anything with ``x_train, y_train, x_test, y_test`` arrays.
    options: a :class:`FitOptions`; or give its fields as keywords
      (``epochs=3, batch_size=32``), which also override ``options``.
    seed: the run's seed (see :func:`~jaxdrop.training.run_keys`).
    mesh: data-parallel training: each batch is split over the mesh's first
      axis, the parameters and the data set are replicated.
    checkpoints: save the run with these :class:`~jaxdrop.training.Checkpoints`
      every ``checkpoints.every_steps`` steps and at the end.
    resume: continue from the newest good checkpoint in ``checkpoints``.
    stop: asked between the compiled pieces of training (after each epoch, and
      within one at each checkpoint interval); once it returns true, ``fit``
      saves that step's checkpoint (with ``checkpoints``) and raises
      :class:`~jaxdrop.errors.TrainingStopped`. A command line passes one that
      turns true on SIGTERM or Ctrl-C, so that no signal lands inside XLA's
      compiler or orbax's writer.
    **option_fields: :class:`FitOptions` fields.

  Returns:
    A :class:`FitResult`; ``history`` has ``epoch``, ``train_loss``,
    ``test_loss`` (and ``train_acc``, ``test_acc`` for classification) for the
    evaluated epochs. With ``FitOptions.average`` the evaluations are of the
    averaged parameters (``execution["evaluated"]`` is ``"ema"`` or ``"swa"``,
    ``result.averaged_params`` holds them).

  Raises:
    TrainingDivergedError: if a training loss is NaN or infinite; nothing
      after the last finite step is saved.
    TrainingStopped: ``stop`` returned true.

  Example:
    >>> import jax.numpy as jnp, optax, types
    >>> from jaxdrop.training import Task, fit, half_squared_error
    >>> x = jnp.linspace(-1, 1, 64)[:, None]
    >>> data = types.SimpleNamespace(x_train=x, y_train=3 * x, x_test=x, y_test=3 * x)
    >>> task = Task(lambda p, x, train, key: x * p["w"], half_squared_error, classification=False)
    >>> result = fit(task, {"w": jnp.zeros(())}, optax.sgd(0.5), data, epochs=20, batch_size=16, seed=0,
    ...              quiet=True)
    >>> round(float(result.state.params["w"]), 3)
    3.0
  """
  options = _options(options, option_fields)
  run = _Run(task, tx, data, options, [seed], batched=False, mesh=mesh)
  return run.train(params, checkpoints, resume, stop)[0]


def fit_seeds(
    task: Task,
    init: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    data,
    options: FitOptions | None = None,
    *,
    seeds: list[int],
    mesh: None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
    **option_fields: Any,
) -> list[FitResult]:
  """Trains one run per seed, all at once: one compiled program ``vmap``-ped over the seeds.

  Each run's initialization (``init(run_keys(seed)["init"])``), shuffles and
  dropout masks are those of :func:`fit` with that seed, so each result equals
  the seed run alone, up to the rounding of batched kernels.

  Args:
    task: the model and loss.
    init: ``init_key -> params``.
    tx: the optimizer.
    data: shared by all runs.
    options: a :class:`FitOptions` (or its fields as keywords).
    seeds: one run per seed.
    mesh: not supported: the seeds train on one device.
    checkpoints: as in :func:`fit` (one checkpoint holds all the seeds).
    resume: as in :func:`fit`.
    stop: as in :func:`fit`.
    **option_fields: :class:`FitOptions` fields.

  Returns:
    One :class:`FitResult` per seed, in order.
  """
  if mesh is not None:
    raise ValueError("fit_seeds trains the seeds on one device; pass mesh=None (or train the seeds one by"
                     " one).")
  options = _options(options, option_fields)
  params = jax.jit(jax.vmap(lambda s: init(run_keys(s)["init"])))(jnp.asarray(seeds))
  run = _Run(task, tx, data, options, list(seeds), batched=True, mesh=None)
  return run.train(params, checkpoints, resume, stop)


class _Run:
  """One :func:`fit` (``batched=False``) or :func:`fit_seeds` (a leading runs axis) from start to end."""

  def __init__(self, task, tx, data, options: FitOptions, seeds: list[int], *, batched: bool, mesh):
    self.task, self.tx, self.options, self.seeds = task, tx, options, seeds
    if options.average is not None:  # last, so that it averages the parameters after each whole update
      self.tx = optax.chain(tx, options.average)
    self.batched, self.mesh = batched, mesh
    # Batched keys come from vmap: jnp.stack of typed keys trips jax's key-reuse checker.
    keys_of = functools.partial(run_keys, mask_generator=options.mask_generator)
    keys = jax.vmap(keys_of)(jnp.asarray(seeds)) if batched else keys_of(seeds[0])
    self.shuffle_keys, self.dropout_keys = keys["shuffle"], keys["dropout"]
    self.train_data = (jnp.asarray(data.x_train), jnp.asarray(data.y_train))
    self.test_data = (jnp.asarray(data.x_test), jnp.asarray(data.y_test))
    self.replicated = None
    if mesh is not None:
      self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
      self.train_data, self.test_data = jax.device_put((self.train_data, self.test_data), self.replicated)
    sums = jax.vmap(evaluate_sums, in_axes=(None, 0, None, None, None)) if batched else evaluate_sums
    self.evaluate_sums = jax.jit(sums, static_argnums=(0, 4)) if batched else evaluate_sums

  def _execution(self, params) -> tuple[str, str, dict[str, str]]:
    """The epoch path, why, and the compiler options (one trace of the model decides both when "auto")."""
    path, options = self.options.path, self.options.compiler_options
    reason = f"requested path={path!r}"
    if "auto" in (path, options):
      one = jax.tree.map(lambda a: a[0], params) if self.batched else params
      convolves = xla_cpu.convolves_on_cpu(self.task, one, self.train_data[0])
      if path == "auto":
        path, reason = xla_cpu.path_for(convolves)
      if options == "auto":
        options = xla_cpu.compiler_options_for(convolves)
    return path, reason, options if isinstance(options, dict) else {}  # None: XLA's defaults

  def _initial_state(self, params):
    create = lambda p: TrainState.create(apply_fn=self.task.apply, params=p, tx=self.tx)
    if self.replicated is not None:
      params = jax.device_put(params, self.replicated)
    # Epochs donate the state's buffers: copy, so that the caller's params stay valid.
    params = jax.tree.map(jnp.copy, params)
    return jax.jit(jax.vmap(create))(params) if self.batched else jax.jit(create)(params)

  def _restore(self, state, checkpoints: Checkpoints):
    restored = checkpoints.restore_latest(state)
    if restored is None:
      return state, Progress.start(self.task, len(self.seeds)), None
    state, saved = restored
    progress = Progress.from_json(saved, self.task)
    step = int(np.max(state.step))
    if progress.epoch - 1 > self.options.epochs:
      trained = progress.epoch - 1
      raise CheckpointMismatchError(
          f"the checkpoint at step {step} in {checkpoints.directory} has trained {trained} epochs, more than"
          f" epochs={self.options.epochs}: resume with epochs={trained} or more (a run does not shrink).",
          directory=checkpoints.directory, fix=("epochs",), step=step, at_least=trained,
      )
    if self.replicated is not None:
      state = jax.device_put(state, self.replicated)
    return state, progress, step

  def _evaluated(self, params) -> str | None:
    """``"ema"`` or ``"swa"``: the kind of ``FitOptions.average`` (checked on ``params``), or ``None``."""
    if self.options.average is None:
      return None
    one = jax.tree.map(lambda a: a[0], params) if self.batched else params
    state = jax.eval_shape(self.options.average.init, one)
    if not isinstance(state, (EmaState, SwaState)):
      raise ValueError(f"FitOptions.average must be jaxdrop.ema(...) or jaxdrop.swa(...); its state is a"
                       f" {type(state).__name__}.")
    return "ema" if isinstance(state, EmaState) else "swa"

  def _evaluated_params(self, state):
    """The parameters that are evaluated: the average's (the chain's last state), or the trained ones."""
    return state.params if self.options.average is None else averaged_params(state.opt_state[-1])

  def train(self, params, checkpoints: Checkpoints | None, resume: bool,
            stop: Callable[[], bool] | None = None) -> list[FitResult]:
    opts, runs = self.options, len(self.seeds)
    evaluated = self._evaluated(params)
    path, reason, compiler_options = self._execution(params)
    batch_sharding = None
    if self.mesh is not None:
      along_data = jax.sharding.PartitionSpec(self.mesh.axis_names[0])
      batch_sharding = jax.sharding.NamedSharding(self.mesh, along_data)
    run_epoch = make_train_epoch(self.task, opts.batch_size, path, seeds_axis=self.batched,
                                 batch_invariant=opts.batch_invariant, batch_sharding=batch_sharding,
                                 compiler_options=compiler_options or None)
    state, progress, resumed_from = self._initial_state(params), Progress.start(self.task, runs), None
    if resume and checkpoints is not None:
      state, progress, resumed_from = self._restore(state, checkpoints)
    x_train, y_train = self.train_data
    steps_per_epoch = math.ceil(x_train.shape[0] / opts.batch_size)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None)) if self.batched else jax.random.fold_in
    tqdm = optional_import("tqdm.auto").tqdm  # the progress bar: an optional dependency, needed only here

    bar = tqdm(total=opts.epochs, initial=progress.epoch - 1, desc=opts.description,
               disable=opts.quiet or not sys.stderr.isatty(), leave=False)
    while progress.epoch <= opts.epochs:
      epoch = progress.epoch
      shuffle_key = fold(self.shuffle_keys, epoch) if opts.shuffle else None
      while progress.epoch_step < steps_per_epoch:
        first_step = int(np.max(state.step))
        count = steps_per_epoch - progress.epoch_step
        if checkpoints is not None and checkpoints.every_steps:
          count = min(count, checkpoints.every_steps - first_step % checkpoints.every_steps)
        # Every piece of an epoch redraws the epoch's shuffle from the same key (clone: on purpose).
        piece_key = None if shuffle_key is None else jax.random.clone(shuffle_key)
        state, metrics = run_epoch(state, x_train, y_train, piece_key, self.dropout_keys, progress.epoch_step,
                                   count)
        metrics = {k: np.asarray(v).reshape(runs, -1) for k, v in metrics.items()}
        _check_finite(metrics["loss"], first_step)
        progress.add_pending(metrics)
        progress.epoch_step += count
        mid_epoch = progress.epoch_step < steps_per_epoch
        if mid_epoch and checkpoints is not None and checkpoints.due(first_step + count):
          checkpoints.save(state, progress.to_json())
        if mid_epoch:
          _stop_if_asked(stop, state, progress, checkpoints)
      if epoch % opts.eval_every == 0 or epoch == opts.epochs:
        self._record_epoch(progress, epoch, state)
      bar.update(1)
      if progress.histories[0]["epoch"]:
        bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in progress.histories[0].items() if k != "epoch"})
      progress.close_epoch()
      if checkpoints is not None and (checkpoints.due(int(np.max(state.step))) or epoch == opts.epochs):
        checkpoints.save(state, progress.to_json())
      if epoch < opts.epochs:
        _stop_if_asked(stop, state, progress, checkpoints)
    bar.close()
    execution = {"path": path, "reason": reason, "runs_vmapped": runs if self.batched else 1,
                 "batch_invariant": opts.batch_invariant,
                 "devices": 1 if self.mesh is None else self.mesh.size,
                 "compiler_options": compiler_options, "resumed_from_step": resumed_from}
    if evaluated is not None:  # only then: the records of runs without an average keep their keys
      execution["evaluated"] = evaluated
    if opts.mask_generator != "philox4x32-10":  # likewise: what the masks came from, where not the default
      execution["mask_generator"] = mask_generator(self.dropout_keys)
    states = [jax.tree.map(lambda a, i=i: a[i], state) for i in range(runs)] if self.batched else [state]
    step_losses = [[np.asarray(losses, np.float32) for losses in run] for run in progress.step_losses]
    return [FitResult(st, h, sl, execution)
            for st, h, sl in zip(states, progress.histories, step_losses, strict=True)]

  def _record_epoch(self, progress: Progress, epoch: int, state) -> None:
    """Appends epoch ``epoch``'s train and (deterministic) test metrics to each run's history."""
    task = self.task

    def metrics_on(data):
      x, y = data
      params = self._evaluated_params(state)
      return summarize(task, self.evaluate_sums(task, params, x, y, min(1024, x.shape[0])))

    test_m = metrics_on(self.test_data)
    if self.options.eval_train:
      train_m = metrics_on(self.train_data)
    else:  # the running average over this epoch's training steps
      sums = {k: np.sum(np.asarray(v, np.float32), axis=-1) for k, v in progress.pending.items()
              if k != "loss"}
      train_m = summarize(task, sums if self.batched else {k: v[0] for k, v in sums.items()})
    for run, history in enumerate(progress.histories):
      def pick(v, run=run):
        return v[run] if self.batched else v
      history["epoch"].append(epoch)
      history["train_loss"].append(pick(train_m["loss"]))
      history["test_loss"].append(pick(test_m["loss"]))
      if task.classification:
        history["train_acc"].append(pick(train_m["accuracy"]))
        history["test_acc"].append(pick(test_m["accuracy"]))


def _stop_if_asked(stop, state, progress: Progress, checkpoints: Checkpoints | None) -> None:
  """Saves the state (with ``checkpoints``) and raises :class:`TrainingStopped` if ``stop()`` is true. Called
  only where a periodic checkpoint could fall, so a resumed run takes the same steps as one never stopped."""
  if stop is None or not stop():
    return
  if checkpoints is not None:
    checkpoints.save(state, progress.to_json())
  raise TrainingStopped(int(np.max(state.step)), checkpointed=checkpoints is not None)


def _check_finite(losses: np.ndarray, first_step: int) -> None:
  """Raises :class:`TrainingDivergedError` at the first NaN or infinite loss of any run."""
  for run_losses in losses:
    if not np.all(np.isfinite(run_losses)):
      bad = int(np.argmin(np.isfinite(run_losses)))
      raise TrainingDivergedError(first_step + bad + 1, float(run_losses[bad]))
