"""The project's figures: sample images, training history, ROC curves, confusion matrix and the
grid search's heatmap.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot state, so it is safe
headless, in threads and in notebooks), writes it as PNG atomically, and returns the Figure so a
notebook can display it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lensing.core.atomic import atomic_write_bytes
from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.core.metrics import check_inputs

DPI = 120  # resolution of every saved PNG, dots per inch
LR_COLUMNS = tuple(f"lr_{group}" for group in LAYER_GROUPS)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` as PNG into memory, then write it to ``path`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_samples(dataset: Any, path: str | Path, per_class: int = 4, seed: int = 0) -> Figure:
    """A grid of example images: one row per class, ``per_class`` random images in each.

    dataset: a ``LensingDataset`` (uses ``.labels``, ``.kind``, ``.split``, ``.files`` and
    item access). A class with fewer images than ``per_class`` leaves its extra cells blank.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class!r}")
    labels = np.asarray(dataset.labels)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(2.2 * per_class, 2.4 * len(CLASSES)), layout="constrained")
    axes = fig.subplots(len(CLASSES), per_class, squeeze=False)
    files = getattr(dataset, "files", None)
    for k, name in enumerate(CLASSES):
        members = np.flatnonzero(labels == k)
        chosen = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        for column, ax in enumerate(axes[k]):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(chosen):
                ax.set_axis_off()
                continue
            image = np.asarray(dataset[int(chosen[column])][0])
            image = image.reshape(image.shape[-2:])  # (1, H, W) or (H, W) -> (H, W)
            ax.imshow(image, cmap="inferno", vmin=0.0, vmax=1.0)
            where = f" ({Path(files[chosen[column]]).name})" if files is not None else ""
            ax.set_title(f"{name}{where}", fontsize=9)
        axes[k][0].set_ylabel(name, fontsize=11)
    kind = getattr(dataset, "kind", "unknown")
    split = getattr(dataset, "split", "")
    fig.suptitle(f"Sample {split} images, one row per class ({kind} data)")
    save_figure(fig, path)
    return fig


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Figure:
    """Training curves: train and val loss (left), val macro AUC (right), against epoch.

    history: one dict per finished epoch with keys ``epoch``, ``train_loss``, ``val_loss`` and
    ``val_auc`` (as ``lensing.training.fit.fit`` writes them; a missing value is left out).
    """
    if not history:
        raise ValueError("history is empty; expected one dict per finished epoch")

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if e.get(key) is None else e[key] for e in history], float)

    epochs = column("epoch")
    if np.isnan(epochs).any():
        epochs = np.arange(1, len(history) + 1, dtype=float)
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, auc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, column("train_loss"), "o-", label="train")
    loss_ax.plot(epochs, column("val_loss"), "s-", label="val")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    loss_ax.legend()
    val_auc = column("val_auc")
    auc_ax.plot(epochs, val_auc, "s-", color="C1", label="val")
    if np.isfinite(val_auc).any():
        best = int(np.nanargmax(val_auc))
        auc_ax.plot(
            epochs[best], val_auc[best], "*", color="k", ms=12, label=f"best {val_auc[best]:.4f}"
        )
    auc_ax.set(xlabel="epoch", ylabel="macro one-vs-rest AUC", title="Validation AUC")
    auc_ax.legend(loc="lower right")
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    save_figure(fig, path)
    return fig


def plot_roc(
    labels: Any, probs: Any, path: str | Path, classes: Sequence[str] = CLASSES
) -> Figure:
    """One-vs-rest ROC curve of each class, their macro average, and the chance diagonal.

    labels: int array (N,); probs: float array (N, len(classes)). The macro curve is the mean
    of the per-class true-positive rates interpolated on the union of their false-positive
    rates; its legend shows the macro AUC as in ``metrics.json`` (mean of the class AUCs).
    """
    from sklearn.metrics import auc, roc_curve

    labels, probs = check_inputs(labels, probs, classes)
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.subplots()
    curves, aucs = [], []
    for k, name in enumerate(classes):
        fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
        curves.append((fpr, tpr))
        aucs.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC = {aucs[-1]:.4f})")
    grid = np.unique(np.concatenate([fpr for fpr, _ in curves]))
    mean_tpr = np.mean([np.interp(grid, fpr, tpr) for fpr, tpr in curves], axis=0)
    ax.plot(grid, mean_tpr, "k--", lw=2, label=f"macro average (AUC = {float(np.mean(aucs)):.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC curves, one class vs rest ({len(labels)} images)",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return fig


def plot_confusion(
    confusion_matrix: Any,
    path: str | Path,
    classes: Sequence[str] = CLASSES,
    normalize: bool = False,
) -> Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted), with counts.

    normalize: colour by the share of each true class (row) and print the share under the
    count, so classes of different sizes compare.
    """
    import seaborn as sns

    matrix = np.asarray(confusion_matrix)
    n = len(classes)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix must have shape ({n}, {n}), got {matrix.shape}")
    counts = matrix.astype(np.int64)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        annot = np.array(
            [f"{c}\n{v:.1%}" for c, v in zip(counts.ravel(), values.ravel(), strict=True)]
        ).reshape(counts.shape)
        fmt = ""
    else:
        values, annot, fmt = counts, True, "d"
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        values,
        annot=annot,
        fmt=fmt,
        cmap="Blues",
        square=True,
        xticklabels=list(classes),
        yticklabels=list(classes),
        vmin=0,
        vmax=1 if normalize else None,
        cbar_kws={"label": "share of true class" if normalize else "images"},
        ax=ax,
    )
    ax.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Confusion matrix ({counts.sum()} images, accuracy {accuracy:.3f})")
    save_figure(fig, path)
    return fig


def plot_search_heatmap(table: Any, path: str | Path) -> Figure:
    """Validation AUC of the grid search over the two learning rates that vary most.

    table: pandas DataFrame with columns lr_early, lr_middle, lr_late, lr_fc, val_auc, epochs,
    state (one row per trial). The two layer groups with the most distinct learning rates are
    the axes (ties go to the earlier group); each cell is the best val AUC over the other
    groups' learning rates, among trials that have a val AUC (finished, pruned or running).
    Cells never tried stay blank.
    """
    import pandas as pd
    import seaborn as sns

    required = (*LR_COLUMNS, "val_auc")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"search table lacks columns {missing}; expected {list(required)} (+ epochs, state)"
        )
    scored = table[pd.to_numeric(table["val_auc"], errors="coerce").notna()]
    if scored.empty:
        raise ValueError("no trial in the search table has a val_auc yet; nothing to plot")
    distinct = {c: scored[c].nunique() for c in LR_COLUMNS}
    x_col, y_col = sorted(LR_COLUMNS, key=lambda c: -distinct[c])[:2]
    grid = scored.pivot_table(index=y_col, columns=x_col, values="val_auc", aggfunc="max")
    grid = grid.sort_index(ascending=False)  # largest learning rate on top, like a y axis
    fig = Figure(figsize=(1.4 * grid.shape[1] + 3, 1.0 * grid.shape[0] + 2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        grid.astype(float),
        annot=True,
        fmt=".4f",
        cmap="viridis",
        xticklabels=[f"{v:.0e}" for v in grid.columns],
        yticklabels=[f"{v:.0e}" for v in grid.index],
        cbar_kws={"label": "val AUC (best over the other groups)"},
        ax=ax,
    )
    ax.set(xlabel=f"{x_col} (learning rate)", ylabel=f"{y_col} (learning rate)")
    others = ", ".join(c for c in LR_COLUMNS if c not in (x_col, y_col))
    ax.set_title(f"Grid search: val AUC, {len(scored)} trials (max over {others})", fontsize=10)
    save_figure(fig, path)
    return fig
