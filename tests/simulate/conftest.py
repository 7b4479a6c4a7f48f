"""Fixtures of the simulator's tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from lensing.simulate import PRESETS, image_seed, simulate_dataset, simulate_image

Key = tuple[str, str, int]  # (split, class, index)


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


@pytest.fixture
def check_pinned_bytes(tmp_path) -> Callable[[str, Mapping[Key, str]], None]:
    """``check(preset, digests)``: every pinned image of ``preset`` (seed 0) has the real
    format and its sha256, drawn alone and as the writer stores it."""

    def check(preset: str, digests: Mapping[Key, str]) -> None:
        for (split, name, index), digest in digests.items():
            rng = np.random.default_rng(image_seed(0, split, name, index))
            image = simulate_image(name, rng, PRESETS[preset])
            assert image.shape == (1, 150, 150) and image.dtype == np.float64
            assert image.min() == 0.0 and image.max() == 1.0
            assert sha(image) == digest, (split, name, index)
        counts = {split: 0 for split in ("train", "val", "test")}
        for split, _, index in digests:
            counts[split] = max(counts[split], index)
        simulate_dataset(tmp_path, counts, workers=1, progress=False, preset=preset)
        for (split, name, index), digest in digests.items():
            assert sha(np.load(tmp_path / split / name / f"{index}.npy")) == digest

    return check
