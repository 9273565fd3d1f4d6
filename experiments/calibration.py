"""How well predicted probabilities match outcomes: predictive entropy, reliability bins and the expected
calibration error (Guo et al., 2017), for class-probability arrays ``(examples, classes)``."""

from __future__ import annotations

import numpy as np

__all__ = ["expected_calibration_error", "predictive_entropy", "reliability"]


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
  """Per example, ``-sum_k p_k log p_k`` (nats): 0 for a certain prediction, ``log K`` for a uniform one.

  Example:
    >>> predictive_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4).tolist()
    [0.0, 0.6931]
  """
  probs = np.asarray(probs, np.float64)
  return 0.0 - np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
  """Examples grouped by confidence (the top probability) into ``bins`` equal bins ``((i - 1) / B, i / B]``.

  Returns:
    Per bin: ``count``, mean ``confidence`` and ``accuracy`` (NaN for an empty bin), and the bin ``edges``.
  """
  if not isinstance(bins, int) or bins < 1:
    raise ValueError(f"bins must be a positive integer, got {bins!r}.")
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence = probs.max(axis=-1)
  correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
  index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(index, minlength=bins).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_confidence = np.bincount(index, confidence, minlength=bins) / count
    accuracy = np.bincount(index, correct, minlength=bins) / count
  return {"count": count, "confidence": mean_confidence, "accuracy": accuracy, "edges": np.linspace(0, 1, bins + 1)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
  """``sum_b (n_b / N) |accuracy_b - confidence_b|`` over the :func:`reliability` bins.

  Example:
    >>> probs = np.array([[0.8, 0.2]] * 4)
    >>> round(expected_calibration_error(probs, np.array([0, 0, 0, 1])), 6)  # 3 of 4 right at confidence 0.8
    0.05
  """
  table = reliability(probs, labels, bins)
  filled = table["count"] > 0
  gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
  return float(np.sum(table["count"][filled] / table["count"].sum() * gaps))
