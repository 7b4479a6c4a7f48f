"""Tests for lensing/explain_plots.py: which images are picked, and the figures written."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from numpy.testing import assert_array_equal

from lensing.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    logits_from_probs,
)
from lensing.evaluation.figures.explain import (
    most_confident,
    plot_mistakes,
    plot_reliability,
    plot_saliency,
    saliency_picks,
    worst_mistakes,
    write_explanations,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ("no", "sphere", "vort")
SIZE = 32

# Eight items. Right: 0 (no, 0.6), 1 (no, 0.9), 3 (sphere, 0.7), 6 (vort, 0.5).
# Wrong: 2 (true no, predicted vort at 0.8), 4 (true sphere, predicted no at 0.95),
# 5 (true sphere, predicted vort at 0.6), 7 (true no, predicted sphere at 0.8).
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 0])
PROBS = np.array(
    [
        [0.60, 0.30, 0.10],
        [0.90, 0.05, 0.05],
        [0.10, 0.10, 0.80],
        [0.20, 0.70, 0.10],
        [0.95, 0.03, 0.02],
        [0.20, 0.20, 0.60],
        [0.25, 0.25, 0.50],
        [0.10, 0.80, 0.10],
    ]
)


def assert_png(path: Path) -> np.ndarray:
    """Check ``path`` is a complete PNG written without leftovers; return its pixels."""
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    return pixels


def toy_images(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, SIZE, SIZE)).astype(np.float32)


class TinyNet(torch.nn.Module):
    """The smallest model with a convolutional ``layer4``: conv, ReLU, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean(dim=(-2, -1)))


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_most_confident_correct_per_class() -> None:
    assert most_confident(LABELS, PROBS, correct=True) == [[1], [3], [6]]
    assert most_confident(LABELS, PROBS, correct=True, per_class=3) == [[1, 0], [3], [6]]


def test_most_confident_wrong_per_true_class() -> None:
    # Items 2 and 7 are both wrong "no" images at 0.8: the tie keeps item order.
    assert most_confident(LABELS, PROBS, correct=False, per_class=2) == [[2, 7], [4, 5], []]
    assert most_confident(LABELS, PROBS, correct=False) == [[2], [4], []]


def test_worst_mistakes_are_ranked_by_predicted_probability() -> None:
    assert_array_equal(worst_mistakes(LABELS, PROBS, n=12), [4, 2, 7, 5])
    assert_array_equal(worst_mistakes(LABELS, PROBS, n=2), [4, 2])
    assert len(worst_mistakes(PROBS.argmax(axis=1), PROBS)) == 0


def test_saliency_picks_is_the_union_of_both_choices() -> None:
    assert_array_equal(saliency_picks(LABELS, PROBS), [1, 2, 3, 4, 6])


def test_selection_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="per_class"):
        most_confident(LABELS, PROBS, correct=True, per_class=0)
    with pytest.raises(ValueError, match="n must be"):
        worst_mistakes(LABELS, PROBS, n=0)


def test_plot_saliency_has_a_panel_per_class_and_outcome(tmp_path) -> None:
    images = toy_images(len(LABELS))
    maps = np.linspace(0, 1, SIZE * SIZE).reshape(1, SIZE, SIZE).repeat(len(LABELS), axis=0)
    path = tmp_path / "figures" / "saliency.png"
    fig = plot_saliency(images, maps, LABELS, PROBS, CLASSES, path)
    assert isinstance(fig, Figure)
    assert_png(path)
    assert len(fig.axes) == 6
    assert sum(len(ax.images) == 2 for ax in fig.axes) == 5  # image + map where filled
    assert texts(fig) == ["no wrong 'vort' image"]
    assert "predicted vort" in fig.axes[1].get_title()  # item 2, the surest wrong "no"
    assert "p(no) = 0.950" in fig.axes[3].get_title()  # item 4, the surest wrong "sphere"


def test_plot_saliency_on_the_picked_subset_is_the_same_figure(tmp_path) -> None:
    images = toy_images(len(LABELS))
    maps = np.random.default_rng(1).random((len(LABELS), SIZE, SIZE))
    full = plot_saliency(images, maps, LABELS, PROBS, CLASSES, tmp_path / "a.png")
    picks = saliency_picks(LABELS, PROBS)
    subset = plot_saliency(
        images[picks], maps[picks], LABELS[picks], PROBS[picks], CLASSES, tmp_path / "b.png"
    )
    assert [ax.get_title() for ax in full.axes] == [ax.get_title() for ax in subset.axes]
    # Pixel for pixel: the same images and maps, drawn the same way.
    assert_array_equal(assert_png(tmp_path / "a.png"), assert_png(tmp_path / "b.png"))
    # The comparison can tell figures apart: another map in one panel changes the pixels.
    maps[picks[0]] = 1 - maps[picks[0]]
    plot_saliency(images, maps, LABELS, PROBS, CLASSES, tmp_path / "c.png")
    assert not np.array_equal(assert_png(tmp_path / "a.png"), assert_png(tmp_path / "c.png"))


def test_plot_saliency_rejects_mismatched_maps(tmp_path) -> None:
    images = toy_images(len(LABELS))
    with pytest.raises(ValueError, match="maps must have shape"):
        plot_saliency(images, np.zeros((3, SIZE, SIZE)), LABELS, PROBS, CLASSES, tmp_path / "s")
    with pytest.raises(ValueError, match="same \\(H, W\\)"):
        maps = np.zeros((len(LABELS), 8, 8))
        plot_saliency(images, maps, LABELS, PROBS, CLASSES, tmp_path / "s.png")
    with pytest.raises(ValueError, match="one name per column"):
        plot_saliency(images, np.zeros((8, SIZE, SIZE)), LABELS, PROBS, ("a", "b"), tmp_path)


def test_plot_reliability_shows_both_eces(tmp_path) -> None:
    rng = np.random.default_rng(2)
    logits = 3.0 * rng.normal(size=(500, 3))
    labels = rng.integers(0, 3, size=500)
    probs = apply_temperature(logits, 1.0)
    calibrated = apply_temperature(logits_from_probs(probs), 3.0)
    path = tmp_path / "reliability.png"
    fig = plot_reliability(probs, calibrated, labels, path, temperature=3.0)
    assert_png(path)
    assert len(fig.axes) == 2
    for ax, values in zip(fig.axes, (probs, calibrated), strict=True):
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        ece = f"accuracy per bin (ECE = {expected_calibration_error(values, labels):.4f})"
        assert ece in legend
    assert "T = 3.000" in fig.axes[1].get_title()


def test_plot_mistakes_shows_the_surest_mistakes(tmp_path) -> None:
    images = torch.from_numpy(toy_images(len(LABELS)))
    path = tmp_path / "mistakes.png"
    fig = plot_mistakes(images, LABELS, PROBS, CLASSES, path, n=3, columns=2)
    assert_png(path)
    assert len(fig.axes) == 3  # the unused fourth cell is removed
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "#4: true sphere\npredicted no"
    assert [t.split(":")[0] for t in titles] == ["#4", "#2", "#7"]
    assert fig.axes[0].get_xlabel() == "p(no) = 0.950\np(sphere) = 0.030\np(vort) = 0.020"


def test_plot_mistakes_without_mistakes_says_so(tmp_path) -> None:
    path = tmp_path / "mistakes.png"
    labels = PROBS.argmax(axis=1)
    dataset = [(torch.zeros(1, SIZE, SIZE), int(y)) for y in labels]  # (image, label) items
    fig = plot_mistakes(dataset, labels, PROBS, CLASSES, path)
    assert_png(path)
    assert len(fig.axes) == 1 and texts(fig) == ["no mistakes among 8 images"]


def test_write_explanations_writes_three_figures(tmp_path) -> None:
    model = TinyNet()
    dataset = [
        (torch.from_numpy(image), int(y)) for image, y in zip(toy_images(8), LABELS, strict=True)
    ]
    summary = write_explanations(model, dataset, LABELS, PROBS, tmp_path, temperature=2.0)
    for name in ("saliency.png", "reliability.png", "mistakes.png"):
        assert_png(tmp_path / name)
    assert summary["temperature"] == 2.0 and summary["temperature_fitted_here"] is False
    assert summary["ece"] == pytest.approx(expected_calibration_error(PROBS, LABELS))
    assert all(p.grad is None for p in model.parameters())


def test_write_explanations_reads_a_lensing_dataset(small_set, tmp_path) -> None:
    from lensing.data.dataset import LensingDataset

    dataset = LensingDataset(small_set, "test", progress=False, cache=False, in_memory=False)
    labels = dataset.labels.numpy()
    probs = np.full((len(labels), 3), 0.1)
    probs[np.arange(len(labels)), (labels + np.arange(len(labels))) % 3] = 0.8
    summary = write_explanations(TinyNet(), dataset, labels, probs, tmp_path)
    assert summary["temperature_fitted_here"] is True
    for name in ("saliency.png", "reliability.png", "mistakes.png"):
        assert_png(tmp_path / name)
