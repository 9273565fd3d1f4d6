"""Where a run stands between epochs and pieces of epochs: what checkpoints save besides the state."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxdrop.training._task import Task

__all__ = ["Progress", "empty_history"]


def empty_history(task: Task) -> dict[str, list[float]]:
  """The per-epoch history of one run: ``epoch``, losses (and accuracies for classification)."""
  history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": []}
  if task.classification:
    history.update(train_acc=[], test_acc=[])
  return history


@dataclasses.dataclass
class Progress:
  """A run's position and what it has recorded so far, for each of its ``runs`` (seeds).

  Attributes:
    epoch: the epoch being trained (1-based).
    epoch_step: steps of that epoch already taken.
    histories: per run, the metrics of the evaluated epochs.
    step_losses: per run, each finished epoch's per-step training losses.
    pending: the per-step metrics of the current epoch so far, ``(runs, steps)`` each.
  """

  epoch: int
  epoch_step: int
  histories: list[dict[str, list[float]]]
  step_losses: list[list[Any]]
  pending: dict[str, Any]

  @classmethod
  def start(cls, task: Task, runs: int) -> Progress:
    return cls(1, 0, [empty_history(task) for _ in range(runs)], [[] for _ in range(runs)], {})

  @classmethod
  def from_json(cls, saved: dict[str, Any], task: Task) -> Progress:
    """The progress saved in a checkpoint (its history keys back in the engine's order)."""
    order = empty_history(task)
    histories = [{k: h[k] for k in order} for h in saved["histories"]]
    return cls(saved["epoch"], saved["epoch_step"], histories, saved["step_losses"], saved["pending"])

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def add_pending(self, metrics: dict[str, np.ndarray]) -> None:
    """Appends a piece's per-step metrics (``(runs, steps)`` each) to the current epoch's."""
    for k, v in metrics.items():
      runs = v.shape[0]
      earlier = np.asarray(self.pending.get(k, np.zeros((runs, 0), v.dtype)), v.dtype)
      self.pending[k] = np.concatenate([earlier, v], 1)

  def close_epoch(self) -> None:
    """Keeps the finished epoch's step losses and moves on to the next epoch."""
    losses = np.asarray(self.pending["loss"], np.float32)
    for run, run_losses in enumerate(self.step_losses):
      run_losses.append(losses[run])
    self.epoch, self.epoch_step, self.pending = self.epoch + 1, 0, {}
