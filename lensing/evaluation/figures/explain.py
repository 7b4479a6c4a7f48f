"""Figures that show why the classifier decides: Grad-CAM maps of its surest right and wrong
calls, a reliability diagram before and after temperature scaling, and its most confident
mistakes.

The choice of images (``most_confident``, ``worst_mistakes``, ``saliency_picks``) is kept apart
from the drawing so it can be checked on its own. Every plot builds a
``matplotlib.figure.Figure`` directly (no pyplot state: safe headless and in notebooks), writes
it as PNG atomically and returns it.

Images may be given as anything indexable by item number: an array or tensor (N, 1, H, W) or
(N, H, W), a list of images, or a data set whose items are (image, label) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from lensing.core.constants import CLASSES
from lensing.data.stretch import apply_stretch
from lensing.evaluation.calibration import (
    N_BINS,
    apply_temperature,
    calibration_summary,
    check_probs,
    logits_from_probs,
    reliability_bins,
)
from lensing.evaluation.figures.plots import save_figure
from lensing.evaluation.saliency import saliency_maps

N_MISTAKES = 12  # mistakes shown by default
MAP_ALPHA = 0.45  # opacity of a saliency map drawn over its image


def most_confident(
    labels: Any, probs: Any, *, correct: bool, per_class: int = 1
) -> list[list[int]]:
    """For each true class, the items the model was surest about, right or wrong.

    Parameters
    ----------
    labels: int array-like (N,), true classes. probs: float array-like (N, C), probabilities.
    correct: True picks items predicted as their true class, ranked by the probability of that
        class; False picks misclassified items, ranked by the probability of the (wrong)
        predicted class.
    per_class: at most this many items per class.

    Returns
    -------
    C lists (one per true class, in label order) of item indices, most confident first; a class
    with fewer candidates has a shorter (possibly empty) list. Ties keep item order.
    """
    probs, labels = check_probs(probs, labels)
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1; got {per_class!r}")
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen = []
    for k in range(probs.shape[1]):
        members = np.flatnonzero((labels == k) & ((predicted == labels) == correct))
        order = np.argsort(-confidence[members], kind="stable")
        chosen.append([int(i) for i in members[order[:per_class]]])
    return chosen


def worst_mistakes(labels: Any, probs: Any, n: int = N_MISTAKES) -> np.ndarray:
    """Indices (int64, at most ``n``) of the misclassified items with the highest probability
    of their predicted class, surest first; ties keep item order.

    labels: int array-like (N,); probs: float array-like (N, C).
    """
    probs, labels = check_probs(probs, labels)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    order = np.argsort(-probs[wrong].max(axis=1), kind="stable")
    return wrong[order[:n]].astype(np.int64)


def saliency_picks(labels: Any, probs: Any) -> np.ndarray:
    """Sorted indices (int64) of the images ``plot_saliency`` shows: per class the most
    confident correct and the most confident wrong one. Computing saliency maps for these only
    and passing the subset to ``plot_saliency`` draws the same figure as passing everything."""
    right = most_confident(labels, probs, correct=True)
    wrong = most_confident(labels, probs, correct=False)
    return np.array(sorted({i for group in (*right, *wrong) for i in group}), dtype=np.int64)


def plot_saliency(
    images: Any,
    maps: Any,
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    path: str | Path,
) -> Figure:
    """One row per true class: its most confident correct image (left) and most confident
    wrong one (right), each with its saliency map drawn over it.

    Parameters
    ----------
    images: N images of H x W pixels (see the module docstring for accepted containers).
    maps: float array-like (N, H, W) in [0, 1], e.g.
        ``lensing.evaluation.saliency.saliency_maps`` for the
        predicted class.
    labels: int (N,), true classes. probs: float (N, C), probabilities.
    classes: C class names in label order. path: where the PNG goes.

    Returns the Figure (C x 2 axes); a slot without a candidate is left blank with a note.
    """
    probs, labels = check_probs(probs, labels)
    classes = _check_classes(classes, probs)
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(maps) != len(labels):
        raise ValueError(f"maps must have shape ({len(labels)}, H, W); got {maps.shape}")
    right = most_confident(labels, probs, correct=True)
    wrong = most_confident(labels, probs, correct=False)
    fig = Figure(figsize=(6.4, 3.2 * len(classes)), layout="constrained")
    axes = fig.subplots(len(classes), 2, squeeze=False)
    for k, name in enumerate(classes):
        for column, (picked, kind) in enumerate(((right[k], "correct"), (wrong[k], "wrong"))):
            ax = axes[k][column]
            ax.set_xticks([])
            ax.set_yticks([])
            if not picked:
                ax.text(
                    0.5,
                    0.5,
                    f"no {kind} '{name}' image",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                )
                continue
            i = picked[0]
            image = _image(images, i)
            if image.shape != maps[i].shape:
                raise ValueError(
                    f"image {i} has shape {image.shape} but its map {maps[i].shape}; expected "
                    "the same (H, W)"
                )
            ax.imshow(image, cmap="gray")
            ax.imshow(maps[i], cmap="jet", alpha=MAP_ALPHA, vmin=0.0, vmax=1.0)
            predicted = int(probs[i].argmax())
            ax.set_title(
                f"true {name}, predicted {classes[predicted]}\n"
                f"p({classes[predicted]}) = {probs[i, predicted]:.3f}",
                fontsize=9,
            )
        axes[k][0].set_ylabel(f"true {name}", fontsize=11)
    axes[0][0].set_title("most confident correct\n" + axes[0][0].get_title(), fontsize=9)
    axes[0][1].set_title("most confident wrong\n" + axes[0][1].get_title(), fontsize=9)
    fig.suptitle("Grad-CAM: where the evidence for the predicted class lies")
    save_figure(fig, path)
    return fig


def plot_reliability(
    probs: Any,
    probs_calibrated: Any,
    labels: Any,
    path: str | Path,
    n_bins: int = N_BINS,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagrams before (left) and after (right) temperature scaling.

    Each panel shows the accuracy of every confidence bin as a bar, the gap to the bin's mean
    confidence hatched in red, and the diagonal of perfect calibration; the legend gives the ECE.
    probs, probs_calibrated: float (N, C) probabilities of the same items; labels: int (N,);
    n_bins: confidence bins; temperature: T used, shown in the right panel's title if given.
    Returns the Figure (2 axes).
    """
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    after = "after temperature scaling" + (f" (T = {temperature:.3f})" if temperature else "")
    for ax, values, title in zip(
        axes, (probs, probs_calibrated), ("before calibration", after), strict=True
    ):
        bins = reliability_bins(values, labels, n_bins)
        filled = bins.counts > 0
        left, width = bins.edges[:-1][filled], np.diff(bins.edges)[filled]
        accuracy, confidence = bins.accuracy[filled], bins.confidence[filled]
        ax.bar(
            left,
            accuracy,
            width=width,
            align="edge",
            color="C0",
            edgecolor="k",
            label=f"accuracy per bin (ECE = {bins.ece:.4f})",
        )
        ax.bar(
            left,
            confidence - accuracy,
            bottom=accuracy,
            width=width,
            align="edge",
            fill=False,
            hatch="//",
            edgecolor="C3",
            label="gap to mean confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence (largest probability)",
            title=f"{title}, {int(bins.counts.sum())} images",
        )
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        # Below the axes: inside, it would hide the bars of some bins.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8)
    axes[0].set_ylabel("accuracy")
    save_figure(fig, path)
    return fig


def plot_mistakes(
    images: Any,
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    path: str | Path,
    n: int = N_MISTAKES,
    columns: int = 4,
) -> Figure:
    """The ``n`` most confident mistakes (``worst_mistakes``), surest first, each with its
    true and predicted class and its probability for every class.

    images: the N images (see the module docstring); labels: int (N,); probs: float (N, C);
    classes: C names; path: where the PNG goes; columns: panels per row.
    Returns the Figure: one axes per mistake shown, or a single axes with a note when the model
    made none.
    """
    probs, labels = check_probs(probs, labels)
    classes = _check_classes(classes, probs)
    if not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1; got {columns!r}")
    picked = worst_mistakes(labels, probs, n)
    if len(picked) == 0:
        fig = Figure(figsize=(5, 2), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no mistakes among {len(labels)} images", ha="center", va="center")
        save_figure(fig, path)
        return fig
    columns = min(int(columns), len(picked))
    rows = -(-len(picked) // columns)
    fig = Figure(figsize=(2.6 * columns, 3.7 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(picked) :]:
        ax.remove()
    for ax, i in zip(axes, picked, strict=False):
        predicted = int(probs[i].argmax())
        ax.imshow(_image(images, int(i)), cmap="inferno")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"#{i}: true {classes[labels[i]]}\npredicted {classes[predicted]}", fontsize=9
        )
        ax.set_xlabel(
            "\n".join(f"p({c}) = {p:.3f}" for c, p in zip(classes, probs[i], strict=True)),
            fontsize=8,
        )
    fig.suptitle(f"The {len(picked)} most confident mistakes of {len(labels)} images")
    save_figure(fig, path)
    return fig


def write_explanations(
    model: torch.nn.Module,
    images: Any,
    labels: Any,
    probs: Any,
    figures_dir: str | Path,
    classes: Sequence[str] = CLASSES,
    temperature: float | None = None,
    n_mistakes: int = N_MISTAKES,
    *,
    saliency: bool = True,
    stretch: str = "none",
) -> dict[str, Any]:
    """Calibration numbers and the three figures of an evaluated split, in one call.

    Parameters
    ----------
    model: the classifier (any device, precision or memory format; it is left as it was).
    images: the N evaluated images (see the module docstring), in the order of labels/probs.
    labels: int (N,); probs: float (N, C), the probabilities that were scored (with test-time
        averaging, the averaged ones).
    figures_dir: folder for saliency.png, reliability.png and mistakes.png.
    classes: C class names.
    temperature: T fitted on the validation split (evaluate's calibration.json); None fits it on
        these items (see ``lensing.evaluation.calibration.calibration_summary``).
    n_mistakes: mistakes shown.
    saliency: also compute the class-activation maps and write saliency.png (the slow part).
    stretch: the model's input stretch (``lensing.data.stretch``), applied before the maps are
        computed; the figure shows the images as stored.

    Returns
    -------
    ``calibration_summary``'s dict (ece, ece_calibrated, temperature, ...) for metrics.json.
    """
    probs, labels = check_probs(probs, labels)
    figures_dir = Path(figures_dir)
    summary = calibration_summary(probs, labels, temperature)
    calibrated = apply_temperature(logits_from_probs(probs), summary["temperature"])
    plot_reliability(
        probs,
        calibrated,
        labels,
        figures_dir / "reliability.png",
        n_bins=summary["n_bins"],
        temperature=summary["temperature"],
    )
    plot_mistakes(images, labels, probs, classes, figures_dir / "mistakes.png", n=n_mistakes)
    if not saliency:
        return summary
    picks = saliency_picks(labels, probs)
    batch = torch.stack(
        [torch.as_tensor(_image(images, int(i)), dtype=torch.float32) for i in picks]
    )[:, None]
    # Explain the class the figure names as predicted (with test-time averaging it can differ
    # from the prediction of the single view the map is computed on).
    targets = probs[picks].argmax(axis=1)
    maps = saliency_maps(model, apply_stretch(batch, stretch), targets=targets)
    plot_saliency(
        batch[:, 0].numpy(),
        maps,
        labels[picks],
        probs[picks],
        classes,
        figures_dir / "saliency.png",
    )
    return summary


def _image(images: Any, i: int) -> np.ndarray:
    """Item ``i`` of an image container as a float (H, W) array."""
    item = images[i]
    if isinstance(item, tuple):  # a data set's (image, label) pair
        item = item[0]
    if isinstance(item, torch.Tensor):
        item = item.detach().float().cpu().numpy()
    image = np.asarray(item, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise ValueError(f"image {i} has shape {image.shape}; expected (1, H, W) or (H, W)")
    return image


def _check_classes(classes: Sequence[str], probs: np.ndarray) -> tuple[str, ...]:
    classes = tuple(classes)
    if len(classes) != probs.shape[1]:
        raise ValueError(
            f"got {len(classes)} class names {list(classes)} for {probs.shape[1]} probability "
            "columns; expected one name per column"
        )
    return classes
