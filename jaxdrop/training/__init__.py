"""An opt-in training engine: jit-compiled train steps, whole epochs in one compiled call,
vmapped seeds, data-parallel meshes, crash-safe checkpoints.

Install its extra (``pip install jaxdrop[training]``: orbax-checkpoint, tqdm).
Randomness is a pure function of the run's seed: the same seed gives the same
masks, shuffles and result, also after a resume.

Example:
  >>> import jax.numpy as jnp, optax, types
  >>> from jaxdrop import training
  >>> x = jnp.linspace(-1, 1, 64)[:, None]
  >>> data = types.SimpleNamespace(x_train=x, y_train=2 * x, x_test=x, y_test=2 * x)
  >>> task = training.Task(lambda p, x, train, key: x * p["w"], training.half_squared_error,
  ...                      classification=False)
  >>> options = training.FitOptions(epochs=20, batch_size=16, quiet=True)
  >>> result = training.fit(task, {"w": jnp.zeros(())}, optax.sgd(0.5), data, options, seed=0)
  >>> result.history["test_loss"][-1] < 1e-6
  True
"""

from flax.training.train_state import TrainState

from jaxdrop.errors import CheckpointError, CheckpointMismatchError, TrainingDivergedError, TrainingStopped
from jaxdrop.training import xla_cpu
from jaxdrop.training._checkpoints import Checkpoints, param_sha256
from jaxdrop.training._evaluate import evaluate
from jaxdrop.training._fit import FitResult, fit, fit_seeds
from jaxdrop.training._options import EpochPath, FitOptions, MaskGenerator
from jaxdrop.training._steps import make_train_epoch, make_train_step
from jaxdrop.training._sweep import SweepResult, fit_sweep, grid
from jaxdrop.training._task import (
    Task,
    apply_per_example,
    batch_plan,
    cross_entropy,
    example_keys,
    half_squared_error,
    run_keys,
    squared_error,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpoints",
    "EpochPath",
    "FitOptions",
    "FitResult",
    "MaskGenerator",
    "SweepResult",
    "Task",
    "TrainState",
    "TrainingDivergedError",
    "TrainingStopped",
    "apply_per_example",
    "batch_plan",
    "cross_entropy",
    "evaluate",
    "example_keys",
    "fit",
    "fit_seeds",
    "fit_sweep",
    "grid",
    "half_squared_error",
    "make_train_epoch",
    "make_train_step",
    "param_sha256",
    "run_keys",
    "squared_error",
    "xla_cpu",
]
