"""Batch augmentation: shapes, exact symmetries, determinism, the affine recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from lensing.core.constants import AUGMENTATIONS
from lensing.data.augment import affine_matrices, augment_batch, d4_views


def batch(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def numpy_d4(image: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of a square (H, W) array, written independently with NumPy."""
    return [np.rot90(base, k) for base in (image, np.fliplr(image)) for k in range(4)]


@pytest.mark.parametrize("mode", [*AUGMENTATIONS, "seed"])
def test_every_mode_keeps_shape_dtype_and_device(mode):
    x = batch()
    y = augment_batch(x, mode, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()


def test_none_is_the_identity():
    x = batch()
    assert_array_equal(augment_batch(x, "none", torch.Generator()).numpy(), x.numpy())


def test_d4_views_are_the_eight_distinct_exact_symmetries_identity_first():
    x = batch(n=2)
    views = d4_views(x)
    assert len(views) == 8
    assert_array_equal(views[0].numpy(), x.numpy())
    for i in range(len(x)):
        got = [v[i, 0].numpy() for v in views]
        expected = numpy_d4(x[i, 0].numpy())
        # Each view is one of the NumPy symmetries, and all 8 are reached exactly once.
        matches = [next(j for j, e in enumerate(expected) if np.array_equal(g, e)) for g in got]
        assert sorted(matches) == list(range(8))
    flat = torch.stack([v.flatten() for v in views])
    assert len(torch.unique(flat, dim=0)) == 8


def test_d4_mode_applies_one_exact_symmetry_per_image():
    x = batch(n=16)
    y = augment_batch(x, "d4", torch.Generator().manual_seed(3))
    for i in range(len(x)):
        expected = numpy_d4(x[i, 0].numpy())
        assert any(np.array_equal(y[i, 0].numpy(), e) for e in expected)
    # With 16 images, more than one symmetry is drawn.
    assert not torch.equal(x, y)


@pytest.mark.parametrize("mode", ["flip-affine", "d4"])
def test_same_generator_state_gives_the_same_batch(mode):
    x = batch(n=8)
    a = augment_batch(x, mode, torch.Generator().manual_seed(7))
    b = augment_batch(x, mode, torch.Generator().manual_seed(7))
    c = augment_batch(x, mode, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_affine_matrices_invert_the_forward_transform():
    flip = torch.tensor([1.0, -1.0])
    angle = torch.tensor([0.3, -0.1])
    scale = torch.tensor([1.04, 0.96])
    shift = torch.tensor([[0.05, -0.03], [-0.02, 0.1]])
    theta = affine_matrices(flip, angle, scale, shift)
    point = torch.tensor([0.2, -0.4])
    for i in range(2):
        c, s = math.cos(angle[i]), math.sin(angle[i])
        mirror = torch.diag(torch.tensor([float(flip[i]), 1.0]))
        forward = scale[i] * torch.tensor([[c, -s], [s, c]]) @ mirror
        moved = forward @ point + shift[i]
        back = theta[i, :, :2] @ moved + theta[i, :, 2]
        assert_allclose(back.numpy(), point.numpy(), atol=1e-6)


def test_a_pure_flip_through_grid_sample_is_an_exact_mirror():
    x = batch(n=1)
    theta = affine_matrices(torch.tensor([-1.0]), torch.zeros(1), torch.ones(1), torch.zeros(1, 2))
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    y = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    assert_allclose(y.numpy(), torch.flip(x, dims=(-1,)).numpy(), atol=1e-6)


def test_seed_mode_moves_pixels_only_a_little():
    # A centred bright square: flips, 10 degree turns, 5% shifts and 5% zooms keep most of it.
    x = torch.zeros(32, 1, 40, 40)
    x[:, :, 15:25, 15:25] = 1.0
    y = augment_batch(x, "flip-affine", torch.Generator().manual_seed(0))
    assert not torch.equal(x, y)
    overlap = (x * y).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert overlap.min() > 0.5
    assert_allclose(y.sum(dim=(1, 2, 3)).numpy(), 100.0, rtol=0.15)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown augmentation mode"):
        augment_batch(batch(), "mixup", None)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.rand(1, 12, 12), "flip-affine", None)
    with pytest.raises(ValueError, match="square"):
        augment_batch(torch.rand(2, 1, 12, 10), "d4", None)
    with pytest.raises(ValueError, match="square"):
        d4_views(torch.rand(2, 1, 12, 10))
