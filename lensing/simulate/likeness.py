"""How much a folder of images looks like the real DeepLense Test I set, statistic by statistic.

``likeness(root, n=100)`` reads the first ``n`` train images of each class (through
:mod:`lensing.data.readers`, min-max normalized as training reads them) and returns a dict of
the statistics below (``sample_statistics``); ``likeness_table(report)`` formats them side by
side with the real set's values (measured on 100 training images per class of the real set)
and says for each row whether it falls in the real range.

Statistics of the sample, from the per-image ones of :mod:`lensing.core.image_stats` (images
are (150, 150), values in [0, 1]):

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
- ``min0_max1``: fraction of images with min exactly 0 and max exactly 1. The readers
  min-max normalize every image, so it is 1 for any set they read; the row stays to show that
  the images compared are those training sees.
- ``k``: median over images of the count scale k of ``count_grid`` (values are multiples of 1/k
  when the image is min-max normalized integer counts, k = max - min counts);
  ``integer_fraction``: fraction of images on their count grid (``on_count_grid``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lensing.core.constants import CLASSES
from lensing.core.image_stats import (
    centre_levels,
    corner_levels,
    count_grid,
    moments,
    on_count_grid,
    ring_radii,
)
from lensing.data.readers.checks import ImageError
from lensing.data.readers.image import read_image
from lensing.data.splits import find_split_files

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


def _read_train(root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` train images of each class (natural file order), float32 (N, 150, 150)
    as :func:`~lensing.data.readers.image.read_image` gives them, and their class indices.
    A missing folder or a file that cannot be used is a ValueError naming it."""
    try:
        files = find_split_files(root, "train")
    except OSError as error:  # a missing or unlistable folder: a bad argument here
        raise ValueError(str(error)) from None
    picked = [
        (path, label)
        for label in range(len(CLASSES))
        for path in [p for p, y in files if y == label][:n]
    ]
    if not picked:
        raise ValueError(f"no train image in {str(root)!r}; expected <train>/<class>/<i>.npy")
    images = []
    for path, _ in picked:
        try:
            images.append(read_image(path).array)
        except ImageError as error:
            raise ValueError(f"{str(path)!r}: {error.reason}") from None
    return np.stack(images), np.asarray([label for _, label in picked])


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
    images, labels = _read_train(Path(root), n)
    return {"data": str(root), **sample_statistics(images, labels)}


def sample_statistics(images: np.ndarray, labels: np.ndarray) -> dict:
    """``likeness``' statistics of a sample of images (N, H, W) in [0, 1] with class indices
    ``labels`` (N,) into CLASSES (``data`` left out): the per-image statistics of
    :mod:`lensing.core.image_stats` summed up over the sample, and the ring of its mean image."""
    flat = images.reshape(len(images), -1)
    means, stds = moments(images)
    corner_medians = corner_levels(images)
    scales, off_grid = count_grid(images)
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
        **_ring(images.mean(0, dtype=np.float64)),
        "class_means": class_means,
        "class_mean_spread": float(max(class_means.values()) - min(class_means.values())),
        "min0_max1": float(np.mean((flat.min(1) == 0.0) & (flat.max(1) == 1.0))),
        "k": float(np.median(scales)),
        "integer_fraction": float(np.mean(on_count_grid(off_grid))),
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
