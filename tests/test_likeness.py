"""The likeness check: its statistics, the integer-count scale, the table, the CLI's --check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lensing.config import CLASSES
from lensing.simulate import likeness, likeness_table, simulate_dataset
from lensing.simulate.likeness import REAL, count_scale, within

KEYS = set(REAL) | {"data", "n_images", "mean_spread", "std_spread", "class_means"}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("likeness")
    counts = {"train": 3, "val": 1, "test": 0}
    for preset in ("test-i", "legacy"):
        simulate_dataset(root / preset, counts, seed=3, workers=1, progress=False, preset=preset)
    return {name: root / name for name in ("test-i", "legacy")}


def test_likeness_returns_every_statistic(sets):
    report = likeness(sets["test-i"])
    assert set(report) == KEYS
    assert report["n_images"] == 3 * len(CLASSES)
    assert set(report["class_means"]) == set(CLASSES)
    assert set(within(report)) == set(REAL)


def test_test_i_looks_like_the_real_set_where_legacy_does_not(sets):
    real_like, legacy = likeness(sets["test-i"]), likeness(sets["legacy"])
    # Integer counts, normalized: every image is a multiple of 1/k with k near the real 809.
    assert real_like["integer_fraction"] == 1.0 and 750 < real_like["k"] < 860
    assert legacy["integer_fraction"] == 0.0
    assert real_like["min0_max1"] == legacy["min0_max1"] == 1.0
    # No lens light: a dark centre in test-i, the lens galaxy's bright core in legacy.
    assert real_like["centre"] < 0.06 < legacy["centre"]
    assert 0.005 < real_like["corner"] < 0.02
    assert real_like["ring_x"] > real_like["ring_y"]
    assert 0.04 < real_like["mean"] < 0.09 and 0.08 < real_like["std"] < 0.16


def test_n_limits_the_images_read(sets):
    assert likeness(sets["test-i"], n=1)["n_images"] == len(CLASSES)
    with pytest.raises(ValueError, match="expected a positive integer"):
        likeness(sets["test-i"], n=0)
    with pytest.raises(ValueError, match="expected"):
        likeness(sets["test-i"] / "nowhere")


def test_count_scale_finds_the_counts_of_a_normalized_image():
    counts = np.random.default_rng(0).poisson(10.0, (150, 150)).astype(float)
    counts[75, 75] = 807 + counts.min()
    image = (counts - counts.min()) / (counts.max() - counts.min())
    assert count_scale(image) == (807.0, True)
    noisy = image + np.random.default_rng(1).normal(0, 1e-4, image.shape)
    assert count_scale(np.clip(noisy, 0, 1))[1] is False


def test_table_marks_rows_in_and_out_of_the_real_range(sets):
    report = likeness(sets["legacy"])
    table = likeness_table(report)
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(REAL) + 1
    row = next(line for line in table.splitlines() if line.startswith("| centre"))
    assert row.endswith("| NO |")
    assert "class means: no" in table
