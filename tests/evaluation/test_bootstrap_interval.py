"""The bootstrap interval of the macro AUC is the 2.5 to 97.5 percentile range."""

from __future__ import annotations

import numpy as np

from lensing.core.metrics import bootstrap_macro_auc, compute_metrics


def test_interval_is_95_percent():
    """auc_macro_ci95 holds the 2.5th and 97.5th percentiles of the seeded bootstrap AUCs."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    probs = rng.dirichlet(np.ones(3), size=90) + 0.6 * np.eye(3)[labels]
    probs /= probs.sum(axis=1, keepdims=True)
    ci = compute_metrics(labels, probs, n_bootstrap=400, seed=5)["auc_macro_ci95"]
    boot = bootstrap_macro_auc(labels, probs, n_bootstrap=400, seed=5)
    low, high = (float(q) for q in np.percentile(boot, [2.5, 97.5]))
    # The data must tell a 95% interval from a 90% one, or the check below proves nothing.
    assert np.percentile(boot, 5) > low and np.percentile(boot, 95) < high
    assert ci == [low, high], f"interval {ci}; 2.5/97.5 percentiles are {[low, high]}"
