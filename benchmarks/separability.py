"""How separable are the classes by trivial means? Logistic regression on pixel statistics.

``python -m benchmarks.separability --data DIR [--json FILE]`` fits two baselines on
``DIR/train`` and scores them on ``DIR/val`` (and ``DIR/test`` when present):

- ``pixel-stats``: mean, std, percentiles, fractions of bright pixels and the radial profile
  (mean in 5-pixel annuli around the centre) of each image, standardized, then multinomial
  logistic regression (the moments and the profile are those of
  :mod:`lensing.core.image_stats`);
- ``pca-20``: the 20 leading principal components of the raw pixels, then the same regression.

It prints macro and per-class one-vs-rest ROC AUC as a markdown table. A simulated set is
subtle enough when these stay near 0.5 (macro AUC <= ~0.6) while a CNN still learns it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table
from lensing.core.constants import CLASSES, IMAGE_SIZE
from lensing.core.image_stats import annulus_pixels, moments, radial_profiles
from lensing.data.dataset import find_split_files
from lensing.data.readers.image import ImageError, read_image

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
BRIGHT_LEVELS = (0.25, 0.5, 0.75)  # fractions of pixels above these normalized values
ANNULUS_WIDTH = 5  # pixels per ring of the radial profile
MIN_ANNULUS_PIXELS = 8  # annuli with fewer pixels (the last, in the corners) are left out
PCA_COMPONENTS = 20


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 150, 150) float32 and labels (N,) of one split; bad files are left out."""
    images, labels = [], []
    for path, label in find_split_files(root, split):
        try:
            images.append(read_image(path).array)
        except ImageError:
            continue
        labels.append(label)
    if not images:
        raise ValueError(f"no usable image in {Path(root) / split}; expected .npy files")
    return np.stack(images), np.asarray(labels)


def pixel_statistics(images: np.ndarray) -> np.ndarray:
    """Features (N, F) of images (N, H, W): moments, percentiles, bright fractions and the
    radial profile (all angles, out to the corners)."""
    flat = images.reshape(len(images), -1)
    profile = radial_profiles(images, ANNULUS_WIDTH)[:, 0]
    kept = annulus_pixels(images.shape[-1], ANNULUS_WIDTH)[0] >= MIN_ANNULUS_PIXELS
    columns = [*moments(images), *np.percentile(flat, PERCENTILES, axis=1)]
    columns += [(flat > level).mean(1) for level in BRIGHT_LEVELS]
    return np.concatenate([np.stack(columns, axis=1), profile[:, kept]], axis=1)


def _auc(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Macro and per-class one-vs-rest AUC, as the package scores its models."""
    from lensing.core.metrics import compute_metrics

    metrics = compute_metrics(labels, probs, CLASSES, n_bootstrap=0)
    return {"auc_macro": metrics["auc_macro"], "auc_per_class": metrics["auc_per_class"]}


def _baselines(n_train: int) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    components = min(PCA_COMPONENTS, n_train - 1)  # fewer on tiny sets (PCA's limit)

    def regression():
        return LogisticRegression(max_iter=5000)

    return {
        "pixel-stats": (pixel_statistics, make_pipeline(StandardScaler(), regression())),
        f"pca-{components}": (
            lambda x: x.reshape(len(x), -1),
            make_pipeline(
                PCA(n_components=components, random_state=0), StandardScaler(), regression()
            ),
        ),
    }


def measure_separability(root: str | Path) -> dict:
    """Fit the baselines on ``root/train``; return their AUCs on val (and test when present).

    Returns ``{"data": str, "n_train": int, "results": {baseline: {split: {"auc_macro": float,
    "auc_per_class": {class: float}, "n": int}}}}``.
    """
    root = Path(root)
    train_x, train_y = load_split(root, "train")
    if train_x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images of shape {train_x.shape[1:]}; expected 150 x 150")
    evaluation = {"val": load_split(root, "val")}
    if (root / "test").is_dir():
        evaluation["test"] = load_split(root, "test")
    results = {}
    for name, (features, model) in _baselines(len(train_y)).items():
        model.fit(features(train_x), train_y)
        results[name] = {}
        for split, (x, y) in evaluation.items():
            scores = _auc(y, model.predict_proba(features(x)))
            results[name][split] = {**scores, "n": len(y)}
    return {"data": str(root), "n_train": len(train_y), "results": results}


def separability_table(report: dict) -> str:
    """The report as a markdown table: one row per baseline and split."""
    rows = [
        [name, split, r["n"], r["auc_macro"], *(r["auc_per_class"][c] for c in CLASSES)]
        for name, splits in report["results"].items()
        for split, r in splits.items()
    ]
    return markdown_table(["baseline", "split", "n", "macro AUC", *CLASSES], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.separability",
        description="AUC of logistic regression on trivial pixel statistics (subtlety check).",
    )
    parser.add_argument("--data", type=Path, required=True, help="data set root (train/, val/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = measure_separability(args.data)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"{report['data']}: {report['n_train']} training images\n")
    print(separability_table(report))
    if args.json is not None:
        from lensing.core.atomic import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
