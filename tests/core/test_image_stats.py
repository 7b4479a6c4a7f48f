"""The per-image statistics on small synthetic images whose answer is known by construction:
a ring of a given radius, a sky of a given level and noise, integer counts of a given scale."""

from __future__ import annotations

import numpy as np
import pytest

from lensing.core.image_stats import (
    CORNER,
    annulus_pixels,
    centre_levels,
    corner_levels,
    corner_pixels,
    count_grid,
    moments,
    on_count_grid,
    radial_profiles,
    ring_radii,
    sky_noise,
    zero_shares,
)

N = 150
YY, XX = np.indices((N, N)) - (N - 1) / 2


def ring(radius_x: float, radius_y: float) -> np.ndarray:
    """An elliptical ring of brightness 1 on a faint sky, 1 px wide along its long axis: a
    circle of radius R fills the annulus R <= r < R + 1 exactly."""
    r = np.hypot(XX / radius_x, YY / radius_y)
    return np.where((r >= 1) & (r < 1 + 1 / max(radius_x, radius_y)), 1.0, 0.01)


def normalized_counts(k: int, seed: int) -> np.ndarray:
    """Poisson counts on a sky of 10 with one peak k counts above the minimum, min-max
    normalized: every value a multiple of 1 / k."""
    counts = np.random.default_rng(seed).poisson(10.0, (N, N)).astype(float)
    counts[75, 75] = counts.min() + k
    return (counts - counts.min()) / k


def test_a_ring_of_known_radius_gives_that_radius():
    images = np.stack([ring(30, 30), ring(20, 20), ring(32, 24)])
    radii = ring_radii(images)
    # The brightest annulus holds the ring; its radius is the annulus' middle.
    np.testing.assert_array_equal(radii["ring_radius"][:2], [30.5, 20.5])
    np.testing.assert_array_equal(radii["ring_x"][:2], [30.5, 20.5])
    np.testing.assert_array_equal(radii["ring_y"], [30.5, 20.5, 24.5])
    # Within 20 degrees of the x axis the ellipse's radius falls from 32 to ~30.6 px.
    assert 31 <= radii["ring_x"][2] <= 33


def test_radial_profiles_average_each_annulus():
    radius = np.hypot(XX, YY)
    profile = radial_profiles(radius[np.newaxis], width=5.0)[0]
    counts = annulus_pixels(N, 5.0)
    assert counts[0].sum() == N * N  # out to the corners, every pixel in one annulus
    assert profile.shape == counts.shape == (3, 22)
    # The mean radius over a whole annulus [a, b) is 2/3 (b^3 - a^3) / (b^2 - a^2).
    inner = 5.0 * np.arange(1, 15)  # the annuli that lie inside the image (b <= 75)
    outer = inner + 5
    expected = 2 / 3 * (outer**3 - inner**3) / (outer**2 - inner**2)
    np.testing.assert_allclose(profile[0, 1:15], expected, atol=0.1)  # pixels, not area
    assert (profile[1:][counts[1:] == 0] == 0).all()  # no pixel in a direction: 0


def test_integer_counts_give_their_scale_and_lie_on_the_grid():
    for k, seed in ((807, 0), (811, 1), (250, 2)):
        image = normalized_counts(k, seed)
        for dtype in (np.float64, np.float32):  # float32: as the readers return it
            scale, off_grid = count_grid(image[np.newaxis].astype(dtype))
            assert scale[0] == k and off_grid[0] == 0.0 and on_count_grid(off_grid)[0]


def test_continuous_values_lie_off_any_grid():
    rng = np.random.default_rng(3)
    continuous = rng.random((2, N, N))
    jittered = np.clip(normalized_counts(807, 4) + rng.normal(0, 1e-4, (N, N)), 0, 1)
    _, off_grid = count_grid(np.concatenate([continuous, jittered[np.newaxis]]))
    assert (off_grid > 0.9).all() and not on_count_grid(off_grid).any()
    scale, off_grid = count_grid(np.zeros((1, N, N)))  # no pixel > 0: no grid at all
    assert scale[0] == np.inf and off_grid[0] == 1.0


def test_corner_sky_level_and_noise():
    rng = np.random.default_rng(5)
    sky = 0.3 + rng.normal(0, 0.01, (N, N))
    flat = np.full((N, N), 0.2)
    flat[60:90, 60:90] = 1.0  # a bright lens far from the corners changes nothing
    images = np.stack([sky, flat])
    assert corner_pixels(images).shape == (2, 4 * CORNER**2)
    level = corner_levels(images)
    assert level[0] == pytest.approx(0.3, abs=0.002) and level[1] == 0.2
    noise = sky_noise(images)
    assert noise[0] == pytest.approx(0.01, rel=0.15) and noise[1] == 0.0


def test_centre_moments_and_zero_share():
    image = np.zeros((N, N))
    disk = np.hypot(XX, YY) < 3
    image[disk] = 1.0  # a disk at the centre, the rest exactly 0
    images = np.stack([image, np.full((N, N), 0.5)]).astype(np.float32)
    np.testing.assert_array_equal(centre_levels(images), [1.0, 0.5])
    mean, std = moments(images)
    np.testing.assert_allclose(mean, images.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, images.std(axis=(1, 2)), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(zero_shares(images), [1 - disk.sum() / N**2, 0.0])


def test_a_stack_gives_each_image_its_own_values():
    images = np.stack([ring(25, 25), normalized_counts(807, 6), ring(31, 22)])
    for function in (corner_levels, sky_noise, centre_levels, zero_shares):
        alone = np.concatenate([function(image[np.newaxis]) for image in images])
        np.testing.assert_allclose(function(images), alone, rtol=1e-12)
    scale, off_grid = count_grid(images)
    assert scale[1] == 807 and off_grid[1] == 0.0
