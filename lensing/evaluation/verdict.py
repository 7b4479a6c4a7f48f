"""Whether a model has learned the classes, in one sentence from its metrics.

A pipeline that runs end to end can still leave a model at chance: on a small budget a ResNet18
from random weights may put nearly every image in one class. The metrics say so, but a
newcomer reading a table of AUCs may not see it; :func:`verdict` says it in words. Two checks,
each on the metrics of :func:`lensing.core.metrics.compute_metrics`:

- chance: the macro AUC's 95% bootstrap interval reaches down to 0.5 (without an interval, the
  macro AUC itself is below ``CHANCE_MARGIN`` above 0.5);
- a neglected class: some class's recall is below ``LOW_RECALL``, as when the model puts
  nearly every image in the other classes.
"""

from __future__ import annotations

from typing import Any

from lensing.core.metrics import class_recalls

CHANCE_AUC = 0.5
CHANCE_MARGIN = 0.05  # without an interval: a macro AUC below 0.55 counts as chance
LOW_RECALL = 0.2  # a class found less often than this is one the model does not predict

ADVICE = (
    "more training (a larger set or more epochs: `python -m lensing run --budget full`), "
    "pretrained weights (`--pretrained lensing` or `imagenet`; random weights stall for tens "
    "of thousands of images), or a GPU; docs/simulated-data.md (How hard the stand-in is) "
    "gives the budgets at which a ResNet18 learns the simulated set"
)


def at_chance(metrics: dict[str, Any]) -> bool:
    """True when the macro AUC cannot be told from chance (see the module's docstring)."""
    ci = metrics.get("auc_macro_ci95")
    if ci:
        return ci[0] <= CHANCE_AUC
    return metrics["auc_macro"] < CHANCE_AUC + CHANCE_MARGIN


def verdict(metrics: dict[str, Any]) -> str:
    """One sentence: the model has learned the classes, or why it has not and what helps."""
    auc = f"macro AUC {metrics['auc_macro']:.3f}"
    ci = metrics.get("auc_macro_ci95")
    if ci:
        auc += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    recalls = class_recalls(metrics["confusion_matrix"], metrics["classes"])
    neglected = {name: r for name, r in recalls.items() if r < LOW_RECALL}
    missed = ", ".join(f"{name} {r:.2f}" for name, r in neglected.items())
    if at_chance(metrics):
        why = f"its {auc} cannot be told from chance (0.5)"
        if missed:
            why += f", and it almost never predicts some classes (recall {missed})"
        return f"This model has NOT learned the classes: {why}. What helps: {ADVICE}."
    if neglected:
        return (
            f"This model ranks the classes above chance, {auc}, but almost never predicts "
            f"some of them (recall {missed}): its labels are not usable yet. What helps: "
            f"{ADVICE}."
        )
    lowest = min(recalls.items(), key=lambda item: item[1])
    return (
        f"This model has learned the classes: {auc}, accuracy {metrics['accuracy']:.3f}, "
        f"lowest recall {lowest[1]:.2f} ({lowest[0]})."
    )
