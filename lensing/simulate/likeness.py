"""How much a folder of images looks like the real DeepLense Test I set, statistic by statistic.

``likeness(root, n=100)`` reads the first ``n`` train images of each class and returns a dict of
the statistics below; ``likeness_table(report)`` formats them side by side with the real set's
values (measured on 100 training images per class of the real set) and says for each row
whether it falls in the real range.

Statistics (images are (150, 150), values in [0, 1]):

- ``mean``, ``std``: per-image mean and standard deviation, median over images;
  ``mean_spread``, ``std_spread``: their standard deviation over images.
- ``corner``: per-image median of the four 15 x 15 corners (the sky far from the lens), median
  over images; ``corner_min``: the smallest such value (the real sky is never 0).
- ``centre``: per-image mean over r < 3 px of the image centre, median over images (the real set
  has no lens light there, only a faint floor).
- ``ring_radius``, ``ring_x``, ``ring_y``: on the mean image of the sample, the radius (px) of
  the peak of the mean brightness in 1-px annuli: over all angles, within 20 degrees of the x
  axis (both sides), and within 20 degrees of the y axis; ``ring_offset``: distance (px) from the
  image centre to the centroid of the mean image's light above its median.
- ``class_means``: mean of the per-image means, per class; ``class_mean_spread``: their range,
  within the real range when sampling noise explains it (``class_mean_tolerance``: with a
  per-image spread of 0.009, 100 images per class differ by up to ~0.004 by chance alone).
- ``min0_max1``: fraction of images with min exactly 0 and max exactly 1.
- ``k``: median over images of the inferred count scale k (values are multiples of 1/k when the
  image is min-max normalized integer counts, k = max - min counts); ``integer_fraction``:
  fraction of images whose values times k all lie within 1e-6 of an integer.

The per-image statistics (``corner_pixels``, ``corner_levels``, ``centre_levels``,
``ring_radii``) are vectorised over a stack of images; :mod:`lensing.data.ood` uses them
to describe a training set and check inputs against it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from lensing.core.constants import CLASSES, IMAGE_SIZE

CORNER = 15  # px, side of each corner square
CENTRE_RADIUS = 3.0  # px
AXIS_WEDGE = np.deg2rad(20.0)  # half-opening of the wedges around the axes
DEFAULT_N = 100  # train images per class, as for the real figures

# The real Test I set, measured on 100 training images per class: (shown value, low, high).
# The ranges are the real value +- its spread over images where one was measured, else the
# range seen over the real images.
REAL: dict[str, tuple[str, float, float]] = {
    "mean": ("0.062 (+- 0.009)", 0.053, 0.071),
    "std": ("0.116 (+- 0.016)", 0.100, 0.132),
    "corner": ("0.011-0.0125", 0.011, 0.0125),
    "corner_min": ("> 0 (never 0)", 1e-9, 1.0),
    "centre": ("0.02-0.05", 0.02, 0.05),
    "ring_radius": ("~24 px", 22.0, 26.0),
    "ring_x": ("~27-32 px", 27.0, 32.0),
    "ring_y": ("~22-25 px", 22.0, 25.0),
    "ring_offset": ("centred (< 1.5 px)", 0.0, 1.5),
    "class_mean_spread": ("0.0005 (0.0620-0.0625)", 0.0, 0.002),
    "min0_max1": ("1.0 (every image)", 1.0, 1.0),
    "k": ("807 or 811", 790.0, 830.0),
    "integer_fraction": ("1.0", 1.0, 1.0),
}
LABELS = {
    "mean": "per-image mean (median)",
    "std": "per-image std (median)",
    "corner": "sky: corner median",
    "corner_min": "sky: smallest corner median",
    "centre": "centre, r < 3 px",
    "ring_radius": "ring radius, all angles",
    "ring_x": "ring radius along x",
    "ring_y": "ring radius along y",
    "ring_offset": "ring centroid offset",
    "class_mean_spread": "class means: max - min",
    "min0_max1": "images with min 0 and max 1",
    "k": "count scale k (median)",
    "integer_fraction": "values multiples of 1/k",
}


def _natural(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem))


def _load(root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` train images of each class (natural file order) and their labels."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = root / "train" / name
        if not folder.is_dir():
            raise ValueError(f"no folder {str(folder)!r}; expected {root}/train/<class>/*.npy")
        for path in sorted(folder.glob("*.npy"), key=_natural)[:n]:
            array = np.load(path, allow_pickle=False)
            if array.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE) or array.size != IMAGE_SIZE**2:
                raise ValueError(f"{str(path)!r} has shape {array.shape}; expected (1, 150, 150)")
            images.append(array.reshape(IMAGE_SIZE, IMAGE_SIZE))
            labels.append(label)
    if not images:
        raise ValueError(f"no train image in {str(root)!r}; expected <train>/<class>/<i>.npy")
    return np.stack(images).astype(np.float64), np.asarray(labels)


def count_scale(image: np.ndarray) -> tuple[float, bool]:
    """The k of an image of min-max normalized integer counts, and whether it fits.

    ``image``: any shape, values in [0, 1]. k is the reciprocal of the smallest gap between
    distinct values, rounded; ``fits`` is True when every value times k is within 1e-6 of an
    integer (continuous values fail: their smallest gap does not divide the others).
    """
    values = np.unique(image)
    gaps = np.diff(values)
    if gaps.size == 0:
        return float("nan"), False
    k = float(np.round(1.0 / gaps.min()))
    scaled = values * k
    return k, bool(np.abs(scaled - np.round(scaled)).max() < 1e-6)


def corner_pixels(images: np.ndarray) -> np.ndarray:
    """Per image, the pixels of its four ``CORNER`` x ``CORNER`` corners (the sky far from the
    lens): ``images`` (N, H, W) -> (N, 4 * CORNER**2)."""
    c = CORNER
    corners = np.concatenate(
        [images[:, :c, :c], images[:, :c, -c:], images[:, -c:, :c], images[:, -c:, -c:]], axis=1
    )
    return corners.reshape(len(images), -1)


def corner_levels(images: np.ndarray) -> np.ndarray:
    """Per image, the median of its ``corner_pixels``: (N, H, W) -> (N,)."""
    return np.median(corner_pixels(images), axis=1)


def centre_levels(images: np.ndarray) -> np.ndarray:
    """Per image, the mean over r < ``CENTRE_RADIUS`` px of the image centre: (N, H, W) -> (N,)."""
    size = images.shape[-1]
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    return images[:, np.hypot(yy, xx) < CENTRE_RADIUS].mean(1)


def ring_radii(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (N, H, W), the radius (px) of the peak of the mean brightness in 1-px annuli
    around the image centre: over all angles (``ring_radius``), within ``AXIS_WEDGE`` of the
    x axis, both sides (``ring_x``), and of the y axis (``ring_y``); each (N,). Vectorised:
    one sparse matrix product for all three, no loop over images."""
    size = images.shape[-1]
    flat = images.reshape(len(images), -1)
    profiles = np.asarray(_annulus_means(size) @ flat.T).T.reshape(len(images), 3, -1)
    peaks = np.argmax(profiles, axis=2) + 0.5
    return {key: peaks[:, i] for i, key in enumerate(("ring_radius", "ring_x", "ring_y"))}


@functools.lru_cache(maxsize=4)
def _annulus_means(size: int):
    """The sparse (3 * (size // 2), size * size) matrix whose product with a flat image is its
    mean brightness in each 1-px annulus r < size // 2: over all angles, then along x, then
    along y (an annulus with no pixel in a wedge gives 0)."""
    from scipy import sparse

    yy, xx = np.indices((size, size)) - (size - 1) / 2
    angle = np.arctan2(yy, xx)
    masks = (
        np.ones((size, size), dtype=bool),
        np.minimum(np.abs(angle), np.pi - np.abs(angle)) < AXIS_WEDGE,
        np.abs(np.abs(angle) - np.pi / 2) < AXIS_WEDGE,
    )
    limit = size // 2
    bins = np.hypot(yy, xx).astype(int).ravel()
    rows, columns = [], []
    for i, mask in enumerate(masks):
        pixels = np.flatnonzero(mask.ravel() & (bins < limit))
        rows.append(i * limit + bins[pixels])
        columns.append(pixels)
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    counts = np.bincount(rows, minlength=3 * limit)
    weights = (1.0 / counts[rows]).astype(np.float32)
    return sparse.csr_matrix((weights, (rows, columns)), shape=(3 * limit, size * size))


def _ring(mean_image: np.ndarray) -> dict[str, float]:
    size = mean_image.shape[-1]
    yy, xx = np.indices(mean_image.shape) - (size - 1) / 2
    light = np.clip(mean_image - np.median(mean_image), 0, None)
    cy, cx = (float((light * c).sum() / light.sum()) for c in (yy, xx))
    radii = ring_radii(mean_image[np.newaxis])
    return {
        **{key: float(value[0]) for key, value in radii.items()},
        "ring_offset": float(np.hypot(cx, cy)),
    }


def likeness(root: str | Path, n: int = DEFAULT_N) -> dict:
    """The statistics of the module docstring for the first ``n`` train images per class of
    ``root`` (a data folder with ``train/<class>/*.npy``). Returns a dict of floats, plus
    ``class_means`` ({class: float}), ``n_images`` (int) and ``data`` (str)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n is {n!r}; expected a positive integer")
    images, labels = _load(Path(root), n)
    return {"data": str(root), **image_statistics(images, labels)}


def image_statistics(images: np.ndarray, labels: np.ndarray) -> dict:
    """``likeness``' statistics of ``images`` (N, H, W) in [0, 1] with class indices ``labels``
    (N,) into CLASSES (``data`` left out)."""
    images = np.asarray(images, dtype=np.float64)
    flat = images.reshape(len(images), -1)
    means, stds = flat.mean(1), flat.std(1)
    corner_medians = corner_levels(images)
    scales = [count_scale(image) for image in images]
    class_means = {
        name: float(means[labels == k].mean())
        for k, name in enumerate(CLASSES)
        if (labels == k).any()
    }
    return {
        "n_images": len(images),
        "mean": float(np.median(means)),
        "mean_spread": float(means.std()),
        "std": float(np.median(stds)),
        "std_spread": float(stds.std()),
        "corner": float(np.median(corner_medians)),
        "corner_min": float(corner_medians.min()),
        "centre": float(np.median(centre_levels(images))),
        **_ring(images.mean(0)),
        "class_means": class_means,
        "class_mean_spread": float(max(class_means.values()) - min(class_means.values())),
        "min0_max1": float(np.mean((flat.min(1) == 0.0) & (flat.max(1) == 1.0))),
        "k": float(np.nanmedian([k for k, _ in scales])),
        "integer_fraction": float(np.mean([fits for _, fits in scales])),
    }


def class_mean_tolerance(report: dict) -> float:
    """Largest class-mean range that sampling noise alone explains: 3 standard errors of the
    difference of two class means (sqrt(2) x per-image spread / sqrt(images per class)), and
    never under REAL's 0.002."""
    per_class = report["n_images"] / max(len(report["class_means"]), 1)
    noise = 3 * np.sqrt(2) * report["mean_spread"] / np.sqrt(per_class)
    return float(max(REAL["class_mean_spread"][2], noise))


def within(report: dict) -> dict[str, bool]:
    """For each row of REAL, whether ``report``'s value lies in the real range (for the class
    means, within ``class_mean_tolerance``)."""
    ok = {key: bool(low <= report[key] <= high) for key, (_, low, high) in REAL.items()}
    ok["class_mean_spread"] = report["class_mean_spread"] <= class_mean_tolerance(report)
    return ok


def likeness_table(report: dict) -> str:
    """``report`` (from ``likeness``) as a markdown table beside the real set's values."""
    ok = within(report)
    lines = [
        f"{report['data']}: {report['n_images']} train images",
        "",
        "| statistic | this set | real Test I | within |",
        "|---|---|---|---|",
    ]
    for key, (shown, _, _) in REAL.items():
        value = report[key]
        text = f"{value:.1f}" if key.startswith(("ring", "k")) else f"{value:.4g}"
        if key in ("mean", "std"):
            text += f" (+- {report[key + '_spread']:.3f})"
        if key == "class_mean_spread":
            text += f" (noise: <= {class_mean_tolerance(report):.4f})"
        lines.append(f"| {LABELS[key]} | {text} | {shown} | {'yes' if ok[key] else 'NO'} |")
    means = ", ".join(f"{name} {value:.4f}" for name, value in report["class_means"].items())
    lines += ["", f"class means: {means} (real: no 0.0620, sphere 0.0625, vort 0.0623)"]
    return "\n".join(lines)
