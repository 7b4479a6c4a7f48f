"""Tests for lensing/calibration.py: ECE against hand computation, temperature recovery."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import softmax

from lensing.evaluation.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    logits_from_probs,
    reliability_bins,
)

# Six items, three classes. With 15 bins of width 1/15 the confidences fall into:
# 0.95 -> bin 14, 0.9 -> bin 13, 0.5 -> bin 7, 0.55 -> bin 8.
HAND_PROBS = np.array(
    [
        [0.95, 0.03, 0.02],  # label 0: right
        [0.95, 0.03, 0.02],  # label 1: wrong
        [0.10, 0.90, 0.00],  # label 1: right
        [0.50, 0.30, 0.20],  # label 0: right
        [0.30, 0.20, 0.50],  # label 0: wrong
        [0.20, 0.25, 0.55],  # label 2: right
    ]
)
HAND_LABELS = np.array([0, 1, 1, 0, 0, 2])


def sampled_labels(logits: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """One label per row drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(softmax(logits / temperature, axis=1), axis=1)
    return (rng.random(len(logits))[:, None] > cumulative).sum(axis=1)


def test_ece_equals_hand_computation() -> None:
    # bin 14: accuracy 1/2, confidence 0.95, 2 items; bin 13: 1 vs 0.9, 1 item;
    # bin 7: 1/2 vs 0.5, 2 items; bin 8: 1 vs 0.55, 1 item.
    expected = (2 * abs(0.5 - 0.95) + abs(1 - 0.9) + 2 * abs(0.5 - 0.5) + abs(1 - 0.55)) / 6
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS) == pytest.approx(expected)


def test_reliability_bins_of_hand_example() -> None:
    bins = reliability_bins(HAND_PROBS, HAND_LABELS)
    assert_allclose(bins.edges, np.linspace(0, 1, 16))
    expected_counts = np.zeros(15, int)
    expected_counts[[7, 8, 13, 14]] = [2, 1, 1, 2]
    assert_array_equal(bins.counts, expected_counts)
    assert_allclose(bins.accuracy[[7, 8, 13, 14]], [0.5, 1.0, 1.0, 0.5])
    assert_allclose(bins.confidence[[7, 8, 13, 14]], [0.5, 0.55, 0.9, 0.95])
    assert np.isnan(bins.accuracy[0]) and np.isnan(bins.confidence[0])


def test_ece_is_zero_for_perfectly_calibrated_bins() -> None:
    # 10 items at confidence 0.8 of which 8 right, 4 at confidence 0.5 of which 2 right.
    probs = np.array([[0.8, 0.1, 0.1]] * 10 + [[0.5, 0.25, 0.25]] * 4)
    labels = np.array([0] * 8 + [1, 2] + [0, 0, 1, 2])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Moving one right answer to wrong in the 0.8 bin opens a gap of 0.1 over 10 of 14 items.
    labels[0] = 2
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1 * 10 / 14)


def test_confidence_one_lands_in_last_bin() -> None:
    bins = reliability_bins(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), n_bins=4)
    assert_array_equal(bins.counts, [0, 0, 0, 2])
    assert bins.ece == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (np.full((3, 3), 1 / 3), np.array([0, 1]), "shape"),
        (np.full((3,), 1 / 3), np.array([0, 1, 2]), "shape"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), np.array([0, 1]), "NaN"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0, 2]), "out of range"),
        (np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0.0, 0.5]), "integer"),
        (np.array([[0.6, 0.6], [0.5, 0.5]]), np.array([0, 1]), "sums to"),
        (np.array([[2.0, -1.0], [0.5, 0.5]]), np.array([0, 1]), "expected \\[0, 1\\]"),
    ],
)
def test_bad_probabilities_are_rejected(probs, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, labels)


def test_bad_bin_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=0)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_sampling_temperature(true_temperature: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(5000, 3))
    labels = sampled_labels(logits, true_temperature, seed=1)
    # The sampling noise of the estimate is about 2% at this size.
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_fit_temperature_is_a_deterministic_minimum() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(2000, 3))
    labels = sampled_labels(logits, 1.5, seed=3)
    t = fit_temperature(logits, labels)
    assert fit_temperature(logits.copy(), labels.copy()) == t

    def nll(temperature: float) -> float:
        probs = apply_temperature(logits, temperature)
        return -float(np.mean(np.log(probs[np.arange(len(labels)), labels])))

    for other in (0.9 * t, 0.99 * t, 1.01 * t, 1.1 * t, 1.0):
        assert nll(t) <= nll(other)


def test_over_confident_logits_get_temperature_above_one() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=1.5, size=(3000, 3))
    labels = sampled_labels(logits, 1.0, seed=5)
    calibrated_t = fit_temperature(logits, labels)
    over_confident_t = fit_temperature(3.0 * logits, labels)
    assert 0.9 < calibrated_t < 1.1
    assert over_confident_t > 2.5
    assert over_confident_t == pytest.approx(3.0 * calibrated_t, rel=1e-4)


def test_log_probabilities_give_the_same_temperature_as_logits() -> None:
    rng = np.random.default_rng(6)
    logits = rng.normal(scale=2.0, size=(1000, 3)) + rng.normal(size=(1000, 1)) * 5
    labels = sampled_labels(logits, 0.7, seed=7)
    from_probs = fit_temperature(logits_from_probs(softmax(logits, axis=1)), labels)
    assert from_probs == pytest.approx(fit_temperature(logits, labels), rel=1e-5)


def test_zero_probabilities_give_finite_logits() -> None:
    logits = logits_from_probs(np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]))
    assert np.all(np.isfinite(logits))
    assert_allclose(softmax(logits, axis=1)[1], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="logits_from_probs"):
        fit_temperature(np.array([[0.0, -np.inf], [-1.0, -1.0]]), np.array([0, 1]))


def test_apply_temperature() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    assert_allclose(apply_temperature(logits, 1.0), softmax(logits, axis=1))
    assert_allclose(apply_temperature(logits, 2.0), softmax(logits / 2.0, axis=1))
    softened = apply_temperature(logits, 4.0)
    assert np.all(softened.max(axis=1) < softmax(logits, axis=1).max(axis=1))
    assert_array_equal(softened.argmax(axis=1), logits.argmax(axis=1))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(logits, bad)


def test_fit_temperature_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 1]), bounds=(0.0, 10.0))


def test_calibration_summary_fits_or_uses_given_temperature() -> None:
    rng = np.random.default_rng(8)
    logits = rng.normal(scale=1.5, size=(3000, 3))
    labels = sampled_labels(logits, 1.0, seed=9)
    over_confident = softmax(3.0 * logits, axis=1)
    fitted = calibration_summary(over_confident, labels)
    assert fitted["temperature_fitted_here"] is True
    assert fitted["temperature"] == pytest.approx(fit_temperature(3.0 * logits, labels), 1e-4)
    assert fitted["ece"] > 0.1
    assert fitted["ece_calibrated"] < 0.3 * fitted["ece"]
    given = calibration_summary(over_confident, labels, temperature=3.0)
    assert given["temperature"] == 3.0 and given["temperature_fitted_here"] is False
    expected = expected_calibration_error(softmax(logits, axis=1), labels)
    assert given["ece_calibrated"] == pytest.approx(expected, abs=1e-9)
