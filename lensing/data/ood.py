"""Whether input images look like the training images: a profile of the train split, and a check.

Training stores ``training_profile(train_split)`` in its checkpoints (key ``training_profile``):
for each per-image statistic below, the quantiles ``QUANTILES`` of its distribution over the
train images, as plain floats (it loads with ``torch.load(weights_only=True)``). ``predict`` and
``evaluate`` call ``check_inputs(profile, images)``: an image whose statistic lies outside the
training range (``bounds``) gets a note naming the statistic and both values, e.g.
``"zero-pixel share 0.44 (training <= 0.0014)"``. Nothing is refused; the note travels with the
prediction. A checkpoint written before profiles were stored cannot check (``NO_PROFILE``).

Statistics, per image (values in [0, 1]; each is defined once, in
:mod:`lensing.core.image_stats`, which :mod:`lensing.simulate.likeness` uses too):

- ``mean``, ``std``: the pixels' mean and standard deviation;
- ``zero_share``: the share of pixels exactly 0 (a min-max normalized image of counts on a sky
  has a handful; an image with a blank, zero background has many);
- ``corner``: the median of the four 15 x 15 corners, the sky level far from the lens;
- ``sky_noise``: their interquartile range / 1.349, the sky's noise (0 for a constant sky);
- ``centre``: the mean over r < 3 px of the centre (lens light);
- ``ring_radius``: the radius (px) of the brightest 1-px annulus around the centre;
- ``elongation``: that radius along the x axis over that along the y axis (+- 20 degrees);
- ``count_scale``: the k of an image of min-max normalized integer counts (its values are
  multiples of 1 / k, k = max - min counts: the brightness scale of the exposure), found on
  every 11th pixel by ``count_grid``;
- ``off_grid``: the share of those pixels off the grid of multiples of 1 / k (0 for integer
  counts; nearly 1 for continuous values).

The training range of a statistic is [q(0.1%) - margin, q(99.9%) + margin], the margin being
``MARGIN`` times the central 99% range q(99.5%) - q(0.5%), and never less than the statistic's
own ``floor``. Measured with a profile of 600 train images of the simulated ``test-i`` preset:
0 of 900 of its held-out test images and 22 of 8,100 (0.27%) of an independent ``test-i`` set
are flagged, and 900 of 900 images of the ``legacy`` preset (lens light, continuous values).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lensing.core.image_stats import (
    centre_levels,
    corner_levels,
    count_grid,
    moments,
    ring_radii,
    sky_noise,
    zero_shares,
)

PROFILE_KEY = "training_profile"  # its key in a checkpoint
PROFILE_VERSION = 1
QUANTILES = (0.001, 0.005, 0.5, 0.995, 0.999)
MARGIN = 0.1  # of the central 99% range, added beyond the 0.1% and 99.9% quantiles
CHUNK = 512  # images per vectorised step: bounds the memory (512 x 22,500 float32 = 46 MB)
NO_PROFILE = "cannot check likeness to the training data (the checkpoint holds no profile)"


@dataclass(frozen=True)
class Statistic:
    """One per-image statistic: its label in notes, its smallest margin and its natural range."""

    label: str
    floor: float  # smallest margin beyond the training quantiles, in the statistic's units
    digits: int = 3  # significant digits shown
    lowest: float = 0.0  # no image can lie below it (a bound there is shown as "<=")


STATISTICS: dict[str, Statistic] = {
    "mean": Statistic("mean", 0.002),
    "std": Statistic("spread (std)", 0.002),
    "zero_share": Statistic("zero-pixel share", 0.0005, digits=2),
    "corner": Statistic("corner sky level", 0.001),
    "sky_noise": Statistic("corner sky noise", 0.0005),
    "centre": Statistic("centre brightness", 0.005),
    "ring_radius": Statistic("ring radius (px)", 1.0),
    "elongation": Statistic("ring elongation (x/y)", 0.05),
    "count_scale": Statistic("count scale k", 5.0, digits=4, lowest=1.0),
    "off_grid": Statistic("off-count-grid share", 0.01, digits=2),
}


# ----------------------------------------------------------------------------- statistics


def _chunks(images: Any) -> Iterator[np.ndarray]:
    """``images`` as float32 arrays (n, H, W) of at most CHUNK images.

    images: a tensor or array (N, 1, H, W) or (N, H, W), a pair (images, labels), a
    LensingDataset, or any map-style dataset of (image, label) items.
    """
    from lensing.data.batches import ordered_batches

    if isinstance(images, torch.Tensor | np.ndarray):
        batches: Iterable = (images[i : i + CHUNK] for i in range(0, len(images), CHUNK))
    else:
        batches = (batch for batch, _ in ordered_batches(images, CHUNK))
    for batch in batches:
        array = batch.cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3 or array.shape[-1] != array.shape[-2] or array.shape[-1] < 8:
            raise ValueError(
                f"got images of shape {tuple(batch.shape)}; expected (N, 1, S, S) or (N, S, S)"
            )
        yield array.astype(np.float32, copy=False)


def image_statistics(images: Any) -> dict[str, np.ndarray]:
    """Every statistic of ``STATISTICS`` for each image: {key: float64 array (N,)}.

    images: as ``_chunks`` takes them (tensor, array, pair or dataset). Vectorised over
    CHUNK images at a time: about a second per 10,000 images of 150 x 150.
    """
    parts: dict[str, list[np.ndarray]] = {key: [] for key in STATISTICS}
    for chunk in _chunks(images):
        for key, values in _chunk_statistics(chunk).items():
            parts[key].append(values.astype(np.float64))
    if not parts["mean"]:
        raise ValueError("got no image; expected at least one")
    return {key: np.concatenate(values) for key, values in parts.items()}


def _chunk_statistics(chunk: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic of ``STATISTICS`` for a chunk (n, S, S) of float32 images."""
    mean, std = moments(chunk)
    radii = ring_radii(chunk)
    scale, off_grid = count_grid(chunk)
    return {
        "mean": mean,
        "std": std,
        "zero_share": zero_shares(chunk),
        "corner": corner_levels(chunk),
        "sky_noise": sky_noise(chunk),
        "centre": centre_levels(chunk),
        "ring_radius": radii["ring_radius"],
        "elongation": radii["ring_x"] / radii["ring_y"],
        "count_scale": scale,
        "off_grid": off_grid,
    }


# ----------------------------------------------------------------------------- profile


def training_profile(images: Any) -> dict[str, Any]:
    """The compact description of the training images that checkpoints store.

    images: the train split (a LensingDataset, a pair (images, labels), or a tensor or
    array (N, 1, H, W)), values in [0, 1].

    Returns {"version": int, "n_images": int, "quantiles": list of float, "statistics":
    {key: list of float, the quantiles of that statistic over the images}}: plain Python
    values only, so ``torch.load(weights_only=True)`` reads it back.
    """
    values = image_statistics(images)
    return {
        "version": PROFILE_VERSION,
        "n_images": int(len(values["mean"])),
        "quantiles": list(QUANTILES),
        "statistics": {
            key: [float(q) for q in np.quantile(finite_or_max(v), QUANTILES)]
            for key, v in values.items()
        },
    }


def finite_or_max(values: np.ndarray) -> np.ndarray:
    """``values`` with non-finite entries replaced by the largest float (so quantiles exist)."""
    return np.nan_to_num(values, nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)


def profile_of(state: dict[str, Any]) -> dict[str, Any] | None:
    """The training profile a checkpoint record holds, or None when it holds none usable."""
    profile = state.get(PROFILE_KEY)
    if not isinstance(profile, dict) or profile.get("quantiles") != list(QUANTILES):
        return None
    statistics = profile.get("statistics")
    if not isinstance(statistics, dict) or not any(key in statistics for key in STATISTICS):
        return None
    return profile


def bounds(profile: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The training range (low, high) of each statistic the profile describes (module
    docstring); statistics unknown to this version are left out."""
    ranges = {}
    for key, quantiles in profile["statistics"].items():
        if key not in STATISTICS or len(quantiles) != len(QUANTILES):
            continue
        q001, q005, _, q995, q999 = quantiles
        margin = max(MARGIN * (q995 - q005), STATISTICS[key].floor)
        ranges[key] = (max(q001 - margin, STATISTICS[key].lowest), q999 + margin)
    return ranges


# ----------------------------------------------------------------------------- check


def check_inputs(profile: dict[str, Any] | None, images: Any) -> list[list[str]]:
    """Per image, one note per statistic outside the training range of ``profile`` (empty
    when it looks like the training images); ``[NO_PROFILE]`` for every image when
    ``profile`` is None.

    images: as ``training_profile`` takes them. A note reads "<label> <value> (training <low>
    to <high>)", or "(training <= <high>)" when the range starts at the lowest value possible.
    """
    if profile is None:
        return [[NO_PROFILE] for _ in range(_count(images))]
    values = image_statistics(images)
    notes: list[list[str]] = [[] for _ in range(len(values["mean"]))]
    for key, (low, high) in bounds(profile).items():
        outside = ~((values[key] >= low) & (values[key] <= high))  # NaN is outside
        for i in np.flatnonzero(outside):
            notes[i].append(_note(key, float(values[key][i]), low, high))
    return notes


def _count(images: Any) -> int:
    from lensing.data.batches import in_memory

    held = in_memory(images) if not isinstance(images, torch.Tensor | np.ndarray) else None
    return len(held[0]) if held is not None else len(images)


def _note(key: str, value: float, low: float, high: float) -> str:
    statistic = STATISTICS[key]
    digits = statistic.digits
    while digits < 8 and f"{value:.{digits}g}" in (f"{low:.{digits}g}", f"{high:.{digits}g}"):
        digits += 1  # enough digits that the value and the bound it crosses differ

    def shown(x: float) -> str:
        return f"{x:.{digits}g}"

    training = f"<= {shown(high)}" if low <= statistic.lowest else f"{shown(low)} to {shown(high)}"
    return f"{statistic.label} {shown(value)} (training {training})"


def flagged_statistics(notes: Iterable[str]) -> list[str]:
    """The labels of the statistics that ``notes`` (one input's) flag, in STATISTICS order."""
    notes = list(notes)
    return [
        s.label for s in STATISTICS.values() if any(n.startswith(s.label + " ") for n in notes)
    ]


def summarize(notes: Iterable[Iterable[str]]) -> dict[str, Any]:
    """How many inputs the notes (one list per input) flag, and how many on each statistic:
    {"flagged": int or None (None: could not check), "n": int, "statistics": {label: int}}."""
    per_input = [list(n) for n in notes]
    if any(NO_PROFILE in n for n in per_input):
        return {"flagged": None, "n": len(per_input), "statistics": {}}
    labels = [flagged_statistics(n) for n in per_input]
    counts = {s.label: sum(s.label in f for f in labels) for s in STATISTICS.values()}
    return {
        "flagged": sum(bool(f) for f in labels),
        "n": len(per_input),
        "statistics": {label: count for label, count in counts.items() if count},
    }


def summary_line(summary: dict[str, Any]) -> str:
    """``summarize``'s result as one line, e.g. "1,600 of 1,600 inputs lie outside the
    training data on: zero-pixel share (1,600), mean (1,212)"."""
    if summary["flagged"] is None:
        return f"{summary['n']:,} inputs not checked: {NO_PROFILE}"
    line = f"{summary['flagged']:,} of {summary['n']:,} inputs lie outside the training data"
    if not summary["statistics"]:
        return line
    return f"{line} on: " + ", ".join(
        f"{label} ({count:,})" for label, count in summary["statistics"].items()
    )
