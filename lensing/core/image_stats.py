"""Per-image statistics of lensing images, each defined once: sky, centre, ring, count scale.

Every function takes a stack of square images ``(N, S, S)`` (values in [0, 1], any float
dtype) and returns one value per image, vectorised over the stack (no loop over images). Three
places describe images with them: :mod:`lensing.data.ood` (the training data's profile that
checkpoints store, and the check of inputs against it), :mod:`lensing.simulate.likeness` (a
folder against the real Test I set) and the pixel-statistics baseline of
``benchmarks/separability.py``. They read no file: images come from
:mod:`lensing.data.readers`. NumPy only, but for the annuli's sparse matrix (SciPy, imported
when first built).

- ``moments``: the pixels' mean and standard deviation; ``zero_shares``: the share of pixels
  exactly 0 (a min-max normalized image of counts on a sky has a handful, an image on a blank,
  zero background has many);
- ``corner_pixels``: the four ``CORNER`` x ``CORNER`` corners, the sky far from the lens;
  ``corner_levels``: their median (the sky level); ``sky_noise``: their interquartile range /
  1.349 (the sky's noise, 0 for a constant sky);
- ``centre_levels``: the mean over r < ``CENTRE_RADIUS`` px of the centre (lens light, if any);
- ``radial_profiles``: the mean brightness in annuli around the centre, over all angles and
  along the x and y axes; ``ring_radii``: the radius of the brightest 1-px annulus of each;
- ``count_grid``: the count scale k of min-max normalized integer counts (values are multiples
  of 1 / k, k = max - min counts: the brightness scale of the exposure) and the share of
  pixels off that grid (0 for integer counts, nearly 1 for continuous values);
  ``on_count_grid``: whether that share is small enough to call the image integer counts.
"""

from __future__ import annotations

import functools

import numpy as np

CORNER = 15  # px, side of each corner square
CENTRE_RADIUS = 3.0  # px
AXIS_WEDGE = np.deg2rad(20.0)  # half-opening of the wedges around the x and y axes
IQR_PER_SIGMA = 1.349  # interquartile range of a normal distribution, in standard deviations
DIRECTIONS = ("all", "x", "y")  # the rows of radial_profiles: all angles, along x, along y
GRID_TOLERANCE = 1e-3  # a pixel / (1 / k) this close to an integer lies on the count grid
GRID_STRIDE = 11  # the count grid is found on every 11th pixel (2,046 of 22,500): as sure, faster
MAX_DIVISOR = 4  # the smallest non-zero sampled pixel is at most 4 counts above the minimum
ON_GRID = 0.002  # an image with at most this share of sampled pixels off its grid lies on it


def _flat(images: np.ndarray) -> np.ndarray:
    """``images`` (N, S, S) as (N, S * S), a view where it can be."""
    return images.reshape(len(images), -1)


def moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean and the standard deviation of its pixels: two float64 arrays (N,).

    The mean is summed in float64, the mean square in the pixels' own dtype (one pass of
    ``einsum``), and the spread is sqrt(E[x^2] - mean^2): a chunk of float32 images is never
    copied to float64 whole.
    """
    flat = _flat(images)
    mean = flat.mean(1, dtype=np.float64)
    square = np.einsum("ij,ij->i", flat, flat).astype(np.float64) / flat.shape[1]
    return mean, np.sqrt(np.maximum(square - mean**2, 0.0))


def zero_shares(images: np.ndarray) -> np.ndarray:
    """Per image, the share of its pixels exactly 0: (N,)."""
    flat = _flat(images)
    return np.count_nonzero(flat == 0, axis=1) / flat.shape[1]


def corner_pixels(images: np.ndarray) -> np.ndarray:
    """Per image, the pixels of its four ``CORNER`` x ``CORNER`` corners (the sky far from the
    lens): (N, S, S) -> (N, 4 * CORNER**2)."""
    c = CORNER
    corners = np.concatenate(
        [images[:, :c, :c], images[:, :c, -c:], images[:, -c:, :c], images[:, -c:, -c:]], axis=1
    )
    return corners.reshape(len(images), -1)


def _corner_ranks(images: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The corner pixels partitioned at the quartiles and the two middle ranks, and the ranks
    of the lower quartile and the middle (the corners hold an even number of pixels)."""
    sky = corner_pixels(images)
    n = sky.shape[1]
    middle, quartile = n // 2, n // 4
    return (
        np.partition(sky, (quartile, middle - 1, middle, n - 1 - quartile), axis=1),
        quartile,
        middle,
    )


def corner_levels(images: np.ndarray) -> np.ndarray:
    """Per image, the median of its ``corner_pixels``, the sky level: (N,)."""
    sky, _, middle = _corner_ranks(images)
    return (sky[:, middle - 1] + sky[:, middle]) / 2


def sky_noise(images: np.ndarray) -> np.ndarray:
    """Per image, the interquartile range of its ``corner_pixels`` / ``IQR_PER_SIGMA``: the
    standard deviation of the sky's noise, were it normal, unmoved by a star or an arc in a
    corner; 0 for a constant sky. (N,)."""
    sky, quartile, _ = _corner_ranks(images)
    return (sky[:, -1 - quartile] - sky[:, quartile]) / IQR_PER_SIGMA


def centre_levels(images: np.ndarray) -> np.ndarray:
    """Per image, the mean over r < ``CENTRE_RADIUS`` px of the image centre: (N,)."""
    size = images.shape[-1]
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    return images[:, np.hypot(yy, xx) < CENTRE_RADIUS].mean(1)


def radial_profiles(
    images: np.ndarray, width: float = 1.0, reach: float | None = None
) -> np.ndarray:
    """Per image, its mean brightness in annuli ``width`` px wide around the image centre, out
    to ``reach`` px (None: to the corners), in each of ``DIRECTIONS``: over all angles, within
    ``AXIS_WEDGE`` of the x axis (both sides) and of the y axis.

    Returns (N, 3, A), annulus a covering a * width <= r < (a + 1) * width; float64 for
    float64 images, else float32. An annulus with no pixel in a direction gives 0 there
    (``annulus_pixels`` counts them). One sparse matrix product, no loop over images.
    """
    size = images.shape[-1]
    matrix, _ = _annuli(size, float(width), _reach(size, reach))
    return np.asarray(matrix @ _flat(images).T).T.reshape(len(images), len(DIRECTIONS), -1)


def annulus_pixels(size: int, width: float = 1.0, reach: float | None = None) -> np.ndarray:
    """How many pixels each annulus of ``radial_profiles`` averages: (3, A) int."""
    return _annuli(size, float(width), _reach(size, reach))[1].copy()


def _reach(size: int, reach: float | None) -> float:
    return float(np.hypot(size, size) / 2) if reach is None else float(reach)


@functools.lru_cache(maxsize=8)
def _annuli(size: int, width: float, reach: float):
    """The sparse (3 * A, size * size) matrix whose product with a flat image is its mean
    brightness in each annulus of ``radial_profiles``, and the pixel count of each (3, A)."""
    from scipy import sparse

    yy, xx = np.indices((size, size)) - (size - 1) / 2
    angle = np.arctan2(yy, xx)
    masks = (
        np.ones((size, size), dtype=bool),
        np.minimum(np.abs(angle), np.pi - np.abs(angle)) < AXIS_WEDGE,
        np.abs(np.abs(angle) - np.pi / 2) < AXIS_WEDGE,
    )
    limit = int(np.ceil(reach / width))
    radius = np.hypot(yy, xx).ravel()
    bins = (radius // width).astype(int)
    rows, columns = [], []
    for i, mask in enumerate(masks):
        pixels = np.flatnonzero(mask.ravel() & (radius < reach))
        rows.append(i * limit + bins[pixels])
        columns.append(pixels)
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    counts = np.bincount(rows, minlength=len(masks) * limit)
    weights = (1.0 / counts[rows]).astype(np.float32)
    shape = (len(masks) * limit, size * size)
    return sparse.csr_matrix((weights, (rows, columns)), shape=shape), counts.reshape(3, limit)


def ring_radii(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image, the radius (px, the annulus' middle) of the brightest 1-px annulus within
    r < S // 2 of ``radial_profiles``: over all angles (``ring_radius``), along the x axis
    (``ring_x``) and along the y axis (``ring_y``); each (N,)."""
    profiles = radial_profiles(images, 1.0, images.shape[-1] // 2)
    peaks = np.argmax(profiles, axis=2) + 0.5
    return {key: peaks[:, i] for i, key in enumerate(("ring_radius", "ring_x", "ring_y"))}


def count_grid(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the count scale k and the share of pixels off the grid of multiples of 1 / k,
    found on every ``GRID_STRIDE``-th pixel: two float64 arrays (N,).

    The step 1 / k is the smallest non-zero sampled pixel v divided by the smallest d in
    1..MAX_DIVISOR that puts (almost) every sampled pixel on the grid (v may be 2 or 3 counts
    when no sampled pixel lies 1 count above the minimum); where none does, d = 1. k is
    rounded to a whole number of counts. A pixel lies on the grid within ``GRID_TOLERANCE`` of
    a step, loose enough for counts stored as float32 (k ~ 800 puts them 5e-5 of a step off).
    An image with no pixel > 0: k = inf and every pixel off the grid.
    """
    pixels = _flat(images)[:, ::GRID_STRIDE]
    smallest = np.where(pixels > 0, pixels, np.inf).min(1)
    finite = np.isfinite(smallest)
    steps = pixels / np.where(finite, smallest, 1.0)[:, None]
    divisor = np.ones(len(pixels))
    off_grid = np.ones(len(pixels))
    found = np.zeros(len(pixels), dtype=bool)
    for d in range(MAX_DIVISOR, 0, -1):  # the smallest d that fits wins, so count down
        scaled = steps * d
        off = (np.abs(scaled - np.round(scaled)) > GRID_TOLERANCE * d).mean(1)
        take = (off <= ON_GRID) | ((d == 1) & ~found)
        divisor, off_grid = np.where(take, d, divisor), np.where(take, off, off_grid)
        found |= off <= ON_GRID
    scale = np.round(divisor / np.where(finite, smallest, 1.0))
    return np.where(finite, scale, np.inf), np.where(finite, off_grid, 1.0)


def on_count_grid(off_grid: np.ndarray) -> np.ndarray:
    """Whether images with these shares off their count grid (``count_grid``) are integer
    counts: at most ``ON_GRID`` of their sampled pixels off it. Bool (N,)."""
    return np.asarray(off_grid) <= ON_GRID
