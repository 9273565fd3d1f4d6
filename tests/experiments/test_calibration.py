"""Calibration metrics of E9: exact values on hand-made predictions."""

import math

import numpy as np
import pytest

from experiments.calibration import expected_calibration_error, predictive_entropy, reliability


def test_entropy_is_zero_for_certainty_and_log_k_for_a_uniform_guess():
  probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
  np.testing.assert_allclose(predictive_entropy(probs), [0.0, math.log(3), math.log(2)], rtol=1e-12)
  assert predictive_entropy(probs)[0] == 0.0 and not np.signbit(predictive_entropy(probs)[0])


def test_ece_is_zero_when_confidence_matches_accuracy_and_exact_otherwise():
  right = np.eye(4)  # certain and right
  assert expected_calibration_error(right, np.arange(4)) == 0.0
  probs = np.array([[0.8, 0.2]] * 4 + [[0.3, 0.7]] * 2)
  labels = np.array([0, 0, 0, 1, 1, 0])  # bin of 0.8: 3/4 right; bin of 0.7: 1/2 right
  expected = 4 / 6 * abs(0.75 - 0.8) + 2 / 6 * abs(0.5 - 0.7)
  assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(expected, rel=1e-12)


def test_reliability_bins_hold_every_example_once():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 5))
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  table = reliability(probs, rng.integers(0, 5, 500), bins=7)
  assert table["count"].sum() == 500 and len(table["edges"]) == 8
  filled = table["count"] > 0
  assert np.all((table["confidence"][filled] > table["edges"][:-1][filled] - 1e-12)
                & (table["confidence"][filled] <= table["edges"][1:][filled] + 1e-12))
  assert np.isnan(table["accuracy"][~filled]).all()
  with pytest.raises(ValueError, match="bins must be a positive integer"):
    reliability(probs, np.zeros(500), bins=0)
