"""Scores of class probabilities against true labels: one-vs-rest AUCs (macro and per
class) with a stratified bootstrap interval, accuracy, confusion matrix, and input checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from lensing.core.constants import CLASSES

# Bootstrap resamples are scored in chunks of about this many (resample, item) weights, so
# 1,000 resamples of a large test set never hold more than a few tens of MB at once.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


def compute_metrics(
    labels: Any,
    probs: Any,
    classes: Sequence[str] = CLASSES,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score class probabilities against true labels.

    Parameters
    ----------
    labels: int array-like, shape (N,), values in ``range(len(classes))``; every class must
        occur (a one-vs-rest AUC is undefined for an absent class).
    probs: float array-like, shape (N, len(classes)); column k is the score of class k
        (softmax probabilities; rows need not sum to 1 exactly).
    classes: class names in label order.
    n_bootstrap: number of stratified bootstrap resamples for the 95% interval of the macro
        AUC; 0 skips it (``auc_macro_ci95`` is then None).
    seed: seed of the bootstrap's random generator.

    Returns
    -------
    dict with ``auc_macro`` (float, the mean of the per-class one-vs-rest AUCs, equal to
    ``sklearn.metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro")``),
    ``auc_per_class`` ({class: float}), ``auc_macro_ci95`` ([low, high] percentile interval or
    None), ``accuracy`` (float, argmax prediction), ``confusion_matrix`` (list of lists of int,
    rows = true class, columns = predicted class, both in ``classes`` order),
    ``classification_report`` (sklearn's ``output_dict``), ``n_bootstrap`` and ``classes``.
    """
    labels, probs = check_inputs(labels, probs, classes)
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")

    per_class = {
        name: float(roc_auc_score(labels == k, probs[:, k])) for k, name in enumerate(classes)
    }
    auc_macro = float(np.mean(list(per_class.values())))
    ci95 = None
    if n_bootstrap > 0:
        boot = bootstrap_macro_auc(labels, probs, n_bootstrap=int(n_bootstrap), seed=seed)
        ci95 = [float(v) for v in np.percentile(boot, [2.5, 97.5])]

    predicted = probs.argmax(axis=1)
    indices = list(range(len(classes)))
    return {
        "auc_macro": auc_macro,
        "auc_per_class": per_class,
        "auc_macro_ci95": ci95,
        "accuracy": float(np.mean(predicted == labels)),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "classification_report": classification_report(
            labels,
            predicted,
            labels=indices,
            target_names=list(classes),
            output_dict=True,
            zero_division=0,
        ),
        "n_bootstrap": int(n_bootstrap),
        "classes": list(classes),
    }


def class_recalls(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> dict[str, float]:
    """Each class's recall, the share of its images predicted as it, from a confusion matrix
    (rows = true class, in ``classes`` order); 0.0 for a class with no image."""
    matrix = np.asarray(confusion, dtype=np.float64)
    recall = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    return {name: float(r) for name, r in zip(classes, recall, strict=True)}


def check_inputs(labels: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int64 (N,), probs float64 (N, K))`` as arrays, or a ValueError saying what is
    wrong: shapes, label range, non-finite scores, a class with no image."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().float().cpu().numpy()
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {list(classes)!r}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}")
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(
            f"probs must have shape (N, {n_classes}) (one column per class of "
            f"{list(classes)}), got {probs.shape}"
        )
    if len(labels) != len(probs):
        raise ValueError(f"got {len(labels)} labels but {len(probs)} rows of probabilities")
    if len(labels) == 0:
        raise ValueError("labels are empty; expected at least one image per class")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)):
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"label {bad!r} out of range; expected 0..{n_classes - 1} ({classes})")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or infinite values")
    counts = np.bincount(labels, minlength=n_classes)
    missing = [name for name, count in zip(classes, counts, strict=True) if count == 0]
    if missing:
        raise ValueError(
            f"no image of class {', '.join(map(repr, missing))} among the labels: its "
            "one-vs-rest AUC is undefined; evaluate on a split that holds every class"
        )
    return labels.astype(np.int64), probs


def bootstrap_macro_auc(
    labels: np.ndarray, probs: np.ndarray, n_bootstrap: int = 1000, seed: int = 0
) -> np.ndarray:
    """Macro one-vs-rest AUC of ``n_bootstrap`` stratified bootstrap resamples.

    Each resample draws, within every class, as many items as the class has, with replacement,
    so every resample holds every class in its original number. A resample is represented by
    its multiplicity weights on the original items, and each AUC is the weighted
    Mann-Whitney statistic (ties count one half) over the items sorted once per class, which
    avoids re-sorting every resample.

    Parameters
    ----------
    labels: int array, shape (N,), every class present.
    probs: float array, shape (N, K).

    Returns
    -------
    float64 array, shape (n_bootstrap,).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    n_items, n_classes = probs.shape
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == k) for k in range(n_classes)]

    # Per class: the sort order of its score column and where runs of equal scores start.
    orders, run_starts, positives = [], [], []
    for k in range(n_classes):
        order = np.argsort(probs[:, k], kind="stable")
        sorted_scores = probs[order, k]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        orders.append(order)
        run_starts.append(starts)
        positives.append(labels[order] == k)
    class_sizes = np.array([len(m) for m in members], dtype=np.float64)

    out = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(n_items, 1))
    for first in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - first)
        weights = np.zeros((size, n_items), dtype=np.float64)
        for idx in members:
            # Stratified: each resample draws len(idx) items of this class with replacement;
            # bincount over (resample, item) turns the draws into multiplicities.
            n = len(idx)
            draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
            weights[:, idx] = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        aucs = np.zeros(size, dtype=np.float64)
        for k in range(n_classes):
            w = weights[:, orders[k]]
            pos = w * positives[k]
            neg = w - pos
            pos_runs = np.add.reduceat(pos, run_starts[k], axis=1)
            neg_runs = np.add.reduceat(neg, run_starts[k], axis=1)
            neg_below = np.cumsum(neg_runs, axis=1) - neg_runs
            wins = np.sum(pos_runs * (neg_below + 0.5 * neg_runs), axis=1)
            n_pos = class_sizes[k]
            aucs += wins / (n_pos * (n_items - n_pos))
        out[first : first + size] = aucs / n_classes
    return out
