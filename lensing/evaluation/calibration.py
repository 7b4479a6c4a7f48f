"""How far the classifier's probabilities can be trusted, and one-parameter temperature scaling
to make them trustworthy.

A model is calibrated when, among the images it gives confidence p, a share p is right. The
expected calibration error (ECE) measures the gap, and temperature scaling divides every logit
by one number T > 0, fitted by maximum likelihood on held-out images: T > 1 softens an
over-confident model, T < 1 sharpens an under-confident one. Dividing all logits by the same T
keeps their order, so the predicted class, the accuracy and every AUC stay exactly as they were.

Everything here works on NumPy arrays (torch tensors are accepted and converted) in float64.

A fitted temperature belongs to one model file, so it travels in a file of its own beside the
reports, never inside the checkpoint (evaluating a model must leave it as it was):
``write_calibration`` writes ``calibration.json`` (the temperature, the split and number of
images it was fitted on, whether with TTA, the ECE before and after, and the SHA-256 of the
checkpoint file it belongs to) and ``read_calibration`` reads one back, checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from lensing.core.atomic import atomic_write_json
from lensing.data.archive import sha256_file

N_BINS = 15  # equal-width confidence bins on [0, 1]
# Search range of the temperature. Wide enough for any sane network (a fit at an end of it
# means the data are degenerate, e.g. every item right with margin), narrow enough that the
# optimizer never sees overflowing logits.
TEMPERATURE_BOUNDS = (1e-2, 1e2)
# Probabilities are clipped to this before taking the log, so a softmax that underflowed to 0
# gives a very negative but finite logit.
_MIN_PROB = 1e-300
_ROW_SUM_TOLERANCE = 1e-3  # probability rows must sum to 1 within this
CALIBRATION_JSON = "calibration.json"  # evaluate writes it into its --out folder
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram, all arrays of length ``n_bins``.

    edges: float (n_bins + 1,), bin edges on [0, 1]; bin m holds confidences in
        (edges[m], edges[m + 1]] (the first bin also holds 0).
    counts: int, items per bin.
    accuracy: float, share of the bin's items whose predicted class is right (NaN if empty).
    confidence: float, mean confidence (max probability) of the bin's items (NaN if empty).
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self) -> float:
        """Sum over bins of |accuracy - confidence| weighted by the bin's share of items."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(gaps * self.counts[filled]) / np.sum(self.counts))


def reliability_bins(probs: Any, labels: Any, n_bins: int = N_BINS) -> ReliabilityBins:
    """Bin items by confidence for a reliability diagram.

    Parameters
    ----------
    probs: float array-like (N, C), C >= 2, softmax probabilities (each row in [0, 1] and
        summing to 1).
    labels: int array-like (N,), true classes in ``range(C)``.
    n_bins: number of equal-width bins on [0, 1].

    Returns
    -------
    ReliabilityBins; confidence is the largest probability of a row and the prediction its
    argmax.
    """
    probs, labels = check_probs(probs, labels)
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}")
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # right=True makes the bins (lo, hi]; a confidence of exactly 0 falls into the first one.
    which = np.digitize(confidence, edges[1:-1], right=True)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=right, minlength=n_bins) / counts
        mean_confidence = np.bincount(which, weights=confidence, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, accuracy, mean_confidence)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """Expected calibration error of probabilities ``probs`` (N, C) for true ``labels`` (N,).

    Confidence is the largest probability of each row; items are put into ``n_bins``
    equal-width bins on [0, 1] by confidence, and the ECE is the sum over bins of
    |accuracy - mean confidence|, each weighted by the bin's share of the N items. 0 means
    perfectly calibrated bins, the worst possible value is 1. See ``reliability_bins`` for the
    inputs.
    """
    return reliability_bins(probs, labels, n_bins).ece


def logits_from_probs(probs: Any) -> np.ndarray:
    """Logits (N, C) whose softmax gives back ``probs`` (N, C): their logarithm.

    Softmax ignores a constant added to a row, so log-probabilities are as good as the network's
    own logits for temperature scaling. With test-time averaging over several views, the log
    of the averaged probabilities is the right input (the averaged model is what is
    calibrated). Zero probabilities are clipped to a tiny positive value, so the result is
    finite.
    """
    probs = _as_float_matrix(probs, "probs")
    _check_probability_rows(probs)
    return np.log(np.clip(probs, _MIN_PROB, None))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Probabilities softmax(logits / temperature), float64 (N, C).

    logits: float array-like (N, C), finite (log-probabilities work: see
    ``logits_from_probs``). temperature: finite float > 0.
    """
    logits = _as_float_matrix(logits, "logits")
    _check_temperature(temperature)
    return softmax(logits / float(temperature), axis=1)


def fit_temperature(
    logits: Any, labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The temperature T > 0 that minimizes the mean NLL of softmax(logits / T).

    Parameters
    ----------
    logits: float array-like (N, C), C >= 2, finite. The network's logits, or the log of its
        probabilities (``logits_from_probs``): softmax is shift-invariant per row, so both give
        the same T. Fit on images the model was not trained on (the validation split).
    labels: int array-like (N,), true classes in ``range(C)``.
    bounds: (low, high) range searched for T, 0 < low < high.

    Returns
    -------
    float T; T > 1 when the logits are over-confident. The search is over log T (the NLL is
    unimodal in it, since it is convex in 1/T) with bounded Brent minimization, so the same
    inputs always give the same T. A value at an end of ``bounds`` means the optimum lies
    beyond it (for instance every item is right with a margin, which pushes T towards 0).
    """
    logits, labels = _check_logits(logits, labels)
    low, high = (float(b) for b in bounds)
    if not (0.0 < low < high < np.inf):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf; got {bounds!r}")
    result = minimize_scalar(
        lambda log_t: _nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(low), np.log(high)),
        method="bounded",
        options={"xatol": 1e-7, "maxiter": 500},
    )
    return float(np.clip(np.exp(result.x), low, high))


def calibration_summary(
    probs: Any, labels: Any, temperature: float | None = None, n_bins: int = N_BINS
) -> dict[str, Any]:
    """ECE of ``probs`` before and after temperature scaling, ready for metrics.json.

    Parameters
    ----------
    probs: float array-like (N, C), the model's probabilities on the evaluated split.
    labels: int array-like (N,).
    temperature: T fitted elsewhere (on the validation split, stored with the model). None fits
        it on these very items, which flatters ``ece_calibrated`` a little (one parameter fitted
        in-sample); ``temperature_fitted_here`` says which happened.
    n_bins: confidence bins of the ECE.

    Returns
    -------
    {"ece": float, "ece_calibrated": float, "temperature": float,
     "temperature_fitted_here": bool, "n_bins": int}
    """
    probs, labels = check_probs(probs, labels)
    logits = logits_from_probs(probs)
    fitted_here = temperature is None
    t = fit_temperature(logits, labels) if fitted_here else float(temperature)
    _check_temperature(t)
    return {
        "ece": expected_calibration_error(probs, labels, n_bins),
        "ece_calibrated": expected_calibration_error(apply_temperature(logits, t), labels, n_bins),
        "temperature": t,
        "temperature_fitted_here": fitted_here,
        "n_bins": int(n_bins),
    }


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """The SHA-256 (64 lower-case hex digits) of a checkpoint file's bytes: what ties a
    calibration file to the model it was fitted for."""
    return sha256_file(checkpoint)


def stored_temperature(record: dict[str, Any]) -> float | None:
    """The ``temperature`` of a record (a calibration file's, or a checkpoint's where an older
    version of evaluate stored it) as a float, or None when it has none or one that is not a
    finite number > 0."""
    value = record.get("temperature")
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        return None
    return float(value) if np.isfinite(value) and value > 0 else None


def write_calibration(path: str | Path, temperature: float, **record: Any) -> Path:
    """Write a calibration file atomically: ``{"temperature": T, **record}`` as JSON.

    record: at least ``checkpoint_sha256`` (``checkpoint_sha256`` of the model file T belongs
    to); evaluate adds ``checkpoint`` (its path), ``split`` and ``n_images`` (what T was fitted
    on), ``tta``, ``source`` ("fitted", or "checkpoint" for a temperature an older version
    stored inside the checkpoint), and ``ece``, ``ece_calibrated``, ``ece_split``.
    Raises ValueError for a temperature that is not a finite number > 0 or a bad hash.
    """
    data = {"temperature": float(temperature), **record}
    _check_record(data, path)
    return atomic_write_json(path, data)


def read_calibration(path: str | Path) -> dict[str, Any]:
    """A calibration file's record (``write_calibration``), checked: its ``temperature`` is a
    finite number > 0 and its ``checkpoint_sha256`` 64 hex digits.

    Raises ValueError naming the file when it cannot be read or is not such a record.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"cannot read calibration file {path} ({type(error).__name__}: {error}); expected "
            f"the {CALIBRATION_JSON} that `python -m lensing evaluate` writes"
        ) from error
    _check_record(data, path)
    return data


def _check_record(data: Any, path: str | Path) -> None:
    expected = f"expected a {CALIBRATION_JSON} as `python -m lensing evaluate` writes it"
    if not isinstance(data, dict):
        raise ValueError(f"calibration file {path} holds a {type(data).__name__}; {expected}")
    if stored_temperature(data) is None:
        raise ValueError(
            f"calibration file {path}: temperature is {data.get('temperature')!r}, expected a "
            f"finite number > 0; {expected}"
        )
    sha256 = data.get("checkpoint_sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(
            f"calibration file {path}: checkpoint_sha256 is {sha256!r}, expected 64 lower-case "
            f"hex digits; {expected}"
        )


def check_probs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate probabilities (N, C) in [0, 1] with rows summing to 1 and labels (N,) in
    ``range(C)``; return them as float64 and int64 arrays."""
    probs = _as_float_matrix(probs, "probs")
    _check_probability_rows(probs)
    return probs, _check_labels(labels, probs.shape)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def _check_logits(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    logits = _as_float_matrix(logits, "logits")
    return logits, _check_labels(labels, logits.shape)


def _as_float_matrix(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU or in half precision
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2 or values.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (N, C) with N >= 1 and C >= 2; got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        hint = " (log of zero probabilities? use logits_from_probs)" if name == "logits" else ""
        raise ValueError(f"{name} hold {bad} NaN or infinite values; expected finite{hint}")
    return values


def _check_probability_rows(probs: np.ndarray) -> None:
    if probs.min() < 0.0 or probs.max() > 1.0:
        raise ValueError(
            f"probs range over [{probs.min():.4g}, {probs.max():.4g}]; expected [0, 1] "
            "(pass probabilities, not logits)"
        )
    sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _ROW_SUM_TOLERANCE:
        raise ValueError(f"row {worst} of probs sums to {sums[worst]:.6g}; expected 1")


def _check_labels(labels: Any, shape: tuple[int, int]) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    n, n_classes = shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one per row; got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)):
            raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    outside = (labels < 0) | (labels >= n_classes)
    if outside.any():
        raise ValueError(
            f"label {labels[outside][0]} out of range; expected 0..{n_classes - 1} "
            f"({n_classes} columns)"
        )
    return labels


def _check_temperature(temperature: Any) -> None:
    if not isinstance(temperature, (int, float, np.floating, np.integer)) or not (
        np.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
