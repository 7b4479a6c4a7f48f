"""Tied scores count one half in every bootstrap resample's AUC, as in scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from lensing.core.metrics import bootstrap_macro_auc

LABELS = np.repeat(np.arange(3), [7, 9, 8])


def test_all_equal_scores_give_one_half():
    """With every score equal, every resample's macro AUC is exactly 0.5."""
    probs = np.full((len(LABELS), 3), 1 / 3)
    boot = bootstrap_macro_auc(LABELS, probs, n_bootstrap=50, seed=1)
    assert np.all(boot == 0.5), boot


def test_tied_scores_match_sklearn_per_resample():
    """On scores rounded to 1 decimal each resample's AUC equals roc_auc_score on it."""
    rng = np.random.default_rng(2)
    probs = np.round(rng.random((len(LABELS), 3)) + 0.3 * np.eye(3)[LABELS], 1)
    n_boot, seed = 30, 4
    boot = bootstrap_macro_auc(LABELS, probs, n_bootstrap=n_boot, seed=seed)
    # The resamples, rebuilt as the function draws them: per class, in class order, an
    # (n_boot, class size) array of indices drawn with replacement by one seeded generator.
    draw = np.random.default_rng(seed)
    members = [np.flatnonzero(LABELS == k) for k in range(3)]
    picks = np.hstack([m[draw.integers(0, len(m), size=(n_boot, len(m)))] for m in members])
    for b, ix in enumerate(picks):
        y, p = LABELS[ix], probs[ix]
        expected = np.mean([roc_auc_score(y == k, p[:, k]) for k in range(3)])
        assert abs(boot[b] - expected) <= 1e-12, (b, boot[b], expected)
