"""The verdict: whether a model has learned the classes, from metrics of real predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensing.cli.run import final_verdict
from lensing.core.constants import CLASSES
from lensing.core.metrics import class_recalls, compute_metrics
from lensing.evaluation.verdict import at_chance, verdict

N_PER_CLASS = 200


def recalls(metrics: dict) -> dict[str, float]:
    return class_recalls(metrics["confusion_matrix"], metrics["classes"])


def scores(signal: float, collapse_to: int | None = None, seed: int = 0) -> dict:
    """Metrics of softmax scores that carry ``signal`` (logit added to the true class) over
    noise; ``collapse_to``: a large bias towards that class, so it takes nearly every argmax."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), N_PER_CLASS)
    logits = rng.normal(size=(len(labels), len(CLASSES)))
    logits[np.arange(len(labels)), labels] += signal
    if collapse_to is not None:
        logits[:, collapse_to] += 6.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=200, seed=seed)


def test_noise_is_at_chance_and_the_verdict_says_not_learned() -> None:
    metrics = scores(signal=0.0)
    assert at_chance(metrics)
    text = verdict(metrics)
    assert text.startswith("This model has NOT learned the classes")
    assert "cannot be told from chance" in text and "--budget full" in text


def test_a_model_that_puts_everything_in_one_class_is_called_out() -> None:
    # At chance, and every image called `no`: both reasons are given, with the recalls.
    metrics = scores(signal=0.0, collapse_to=0)
    assert recalls(metrics)["no"] > 0.95 and recalls(metrics)["sphere"] < 0.05
    text = verdict(metrics)
    assert "NOT learned" in text and "almost never predicts" in text
    assert "sphere 0.0" in text and "vort 0.0" in text
    # Above chance in ranking, but its labels still collapse onto one class.
    ranked = scores(signal=2.0, collapse_to=0)
    assert not at_chance(ranked)
    text = verdict(ranked)
    assert "ranks the classes above chance" in text and "not usable yet" in text


def test_a_model_that_separates_the_classes_is_said_to_have_learned_them() -> None:
    metrics = scores(signal=4.0)
    assert not at_chance(metrics) and min(recalls(metrics).values()) > 0.8
    text = verdict(metrics)
    assert text.startswith("This model has learned the classes")
    assert f"accuracy {metrics['accuracy']:.3f}" in text and "NOT" not in text


def test_recalls_are_the_confusion_matrix_rows() -> None:
    assert class_recalls([[3, 1], [0, 0]], ["a", "b"]) == {"a": 0.75, "b": 0.0}


@pytest.mark.parametrize(("auc", "expected"), [(0.53, True), (0.60, False)])
def test_without_an_interval_the_macro_auc_decides(auc: float, expected: bool) -> None:
    assert at_chance({"auc_macro": auc, "auc_macro_ci95": None}) is expected


def test_the_main_job_ends_with_the_verdict_of_its_metrics(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    assert final_verdict(path).startswith(f"No verdict: {path} could not be read")
    path.write_text("{not json")
    assert final_verdict(path).startswith("No verdict")
    path.write_text(json.dumps(scores(signal=0.0) | {"split": "test"}))
    assert final_verdict(path).startswith("On the test split: This model has NOT learned")
