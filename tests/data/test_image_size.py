"""An image that is not 150x150 in either direction is refused, or resampled with resize."""

from __future__ import annotations

import numpy as np
import pytest

from lensing.data.readers.image import ImageError, read_image, resample


@pytest.mark.parametrize("shape", [(150, 200), (200, 150)])
def test_wrong_size_refused_or_resampled(tmp_path, shape):
    """Either side off 150 is refused without resize and resampled to 150x150 with it."""
    path = tmp_path / "x.npy"
    image = np.random.default_rng(0).random(shape)
    np.save(path, image)
    h, w = shape
    with pytest.raises(ImageError, match=rf"image of {h}x{w} pixels; expected 150x150"):
        read_image(path)
    read = read_image(path, resize=True)
    assert read.array.shape == (150, 150)
    assert any(n.startswith(f"resampled {h}x{w} -> 150x150") for n in read.notes), read.notes
    expected = resample(image, 150)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(read.array, expected, atol=1e-6)
