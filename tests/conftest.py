"""Shared fixtures: small data sets written into temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lensing.constants import CLASSES, IMAGE_SIZE


def _write_set(
    root: Path,
    counts: dict[str, int],
    *,
    seed: int = 0,
    shape: tuple[int, ...] = (1, IMAGE_SIZE, IMAGE_SIZE),
) -> Path:
    """Write ``counts[split]`` images per class with a faint class-dependent pattern.

    The class signal (a ring for ``sphere``, a bar for ``vort``) is weak but learnable, so a short
    training run on these can beat chance. Files are float64 in [0, 1], named 1.npy, 2.npy, ...
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - IMAGE_SIZE / 2
    radius = np.hypot(yy, xx)
    patterns = {
        "no": np.zeros((IMAGE_SIZE, IMAGE_SIZE)),
        "sphere": np.exp(-(((radius - 30) / 3) ** 2)),
        "vort": np.exp(-((yy / 3) ** 2)) * (np.abs(xx) < 40),
    }
    for split, n in counts.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                image = 0.5 * rng.random((IMAGE_SIZE, IMAGE_SIZE)) + 0.5 * patterns[name]
                image = (image - image.min()) / (image.max() - image.min())
                np.save(folder / f"{i}.npy", image.reshape(shape))
    return root


@pytest.fixture(scope="session")
def write_set():
    """The function that writes a small data set: ``write_set(root, counts, seed=, shape=)``."""
    return _write_set


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """4 train, 2 val and 2 test images per class."""
    return _write_set(tmp_path / "set", {"train": 4, "val": 2, "test": 2})
