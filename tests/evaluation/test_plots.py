"""Tests for lensing/plots.py: each figure is written as a PNG and returned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lensing.evaluation.figures.plots import (
    plot_confusion,
    plot_history,
    plot_roc,
    plot_samples,
    plot_search_heatmap,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5_000  # a real rendering, not an empty canvas
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind


def test_plot_samples(small_set, tmp_path) -> None:
    from lensing.data.dataset import LensingDataset

    dataset = LensingDataset(small_set, "train", progress=False, cache=False)
    path = tmp_path / "figures" / "samples.png"
    fig = plot_samples(dataset, path, per_class=3, seed=1)
    assert isinstance(fig, Figure)
    assert_png(path)
    assert f"({dataset.kind} data)" in fig._suptitle.get_text()  # the data's provenance
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 9 and all(t.split()[0] in ("no", "sphere", "vort") for t in titles)


def test_plot_samples_leaves_blank_cells_for_small_classes(small_set, tmp_path) -> None:
    from lensing.data.dataset import LensingDataset

    dataset = LensingDataset(small_set, "val", progress=False, cache=False)  # 2 per class
    fig = plot_samples(dataset, tmp_path / "samples.png", per_class=4)
    assert sum(bool(ax.images) for ax in fig.axes) == 6


def test_plot_history(tmp_path) -> None:
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_auc": 0.5 + 0.1 * e}
        for e in range(1, 5)
    ]
    fig = plot_history(history, tmp_path / "history.png")
    assert_png(tmp_path / "history.png")
    loss_ax, auc_ax = fig.axes[:2]
    assert len(loss_ax.lines) == 2
    np.testing.assert_allclose(auc_ax.lines[0].get_ydata(), [0.6, 0.7, 0.8, 0.9])
    with pytest.raises(ValueError, match="history is empty"):
        plot_history([], tmp_path / "empty.png")


def test_plot_roc(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    probs = rng.dirichlet(np.ones(3), size=90)
    probs[np.arange(90), labels] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    fig = plot_roc(labels, probs, tmp_path / "roc.png")
    assert_png(tmp_path / "roc.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert [t.split()[0] for t in legend] == ["no", "sphere", "vort", "macro", "chance"]
    with pytest.raises(ValueError, match="shape"):
        plot_roc(labels, probs[:, :2], tmp_path / "bad.png")


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion(tmp_path, normalize) -> None:
    matrix = [[20, 3, 2], [4, 18, 3], [0, 1, 24]]
    fig = plot_confusion(matrix, tmp_path / "cm.png", normalize=normalize)
    assert_png(tmp_path / "cm.png")
    annotations = [t.get_text() for t in fig.axes[0].texts]
    assert annotations[0].split("\n")[0] == "20"
    assert ("80.0%" in annotations[0]) == normalize
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        plot_confusion([[1, 2], [3, 4]], tmp_path / "bad.png")


def test_plot_search_heatmap_uses_the_two_most_varied_groups(tmp_path) -> None:
    rows = []
    for early in (1e-5, 1e-4, 1e-3):
        for late in (1e-4, 1e-3):
            for fc in (1e-3,):
                rows.append(
                    {
                        "lr_early": early,
                        "lr_middle": 1e-4,
                        "lr_late": late,
                        "lr_fc": fc,
                        "val_auc": 0.7 + early * 10 + late * 20,
                        "epochs": 3,
                        "state": "COMPLETE",
                    }
                )
    rows.append({**rows[0], "val_auc": None, "state": "RUNNING"})
    table = pd.DataFrame(rows)
    fig = plot_search_heatmap(table, tmp_path / "search.png")
    assert_png(tmp_path / "search.png")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("lr_early") and ax.get_ylabel().startswith("lr_late")
    values = sorted(float(t.get_text()) for t in ax.texts)
    assert values == pytest.approx(sorted(table["val_auc"].dropna().round(4)))
    with pytest.raises(ValueError, match="lacks columns"):
        plot_search_heatmap(table.drop(columns="lr_fc"), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no trial"):
        plot_search_heatmap(table.iloc[-1:], tmp_path / "bad.png")


def test_show_displays_a_figure_or_a_png_file_as_png_bytes(tmp_path, monkeypatch) -> None:
    import IPython.display

    from lensing.evaluation.figures.inline import show

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_auc": 0.6}]
    fig = plot_history(history, tmp_path / "history.png")
    assert show(fig) is None  # a cell ending in show() prints no repr after the image
    show(tmp_path / "history.png")
    assert [type(obj) for obj in shown] == [IPython.display.Image] * 2
    rendered, read = (obj.data for obj in shown)
    assert rendered.startswith(PNG_MAGIC) and read == (tmp_path / "history.png").read_bytes()
    # The in-memory rendering is the saved one: same renderer, same resolution.
    assert len(rendered) == pytest.approx(len(read), rel=0.05)
    assert "image/png" in shown[0]._repr_mimebundle_()[0]


def test_show_says_what_it_got_when_it_cannot_show_it(tmp_path) -> None:
    from lensing.evaluation.figures.inline import png_bytes

    with pytest.raises(FileNotFoundError, match="no figure at"):
        png_bytes(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="is not a PNG file"):
        png_bytes(tmp_path / "notes.png")
    with pytest.raises(TypeError, match="got list"):
        png_bytes([1, 2])
