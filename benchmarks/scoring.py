"""Train one model with the package and score it on the test split: what every AUC benchmark does.

:func:`train_and_score` trains a randomly initialized ResNet18 with
``lensing.training.fit.fit`` on the CPU, keeps the epoch with the best validation macro AUC
(``best_model.pth``) and scores it on the test split with ``predict_split`` and
``compute_metrics``, with and without D4 test-time averaging. ``benchmarks.quality`` and
``benchmarks.compare_recipes`` both go through it, so their figures are measured the same way.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.core.metrics import compute_metrics
from lensing.core.runtime import resolve_precision
from lensing.model.checkpoint import BEST_MODEL, CHECKPOINT
from lensing.model.inference import load_trained_model, predict_split
from lensing.training.config import TrainConfig
from lensing.training.fit import fit
from lensing.training.recipes import recipe_rates

DEVICE = "cpu"  # the benchmarks measure the CPU; benchmarks.gpu measures a GPU
SCORES = ("auc_macro", "auc_per_class", "auc_macro_ci95", "accuracy", "confusion_matrix")


def rate_fields(recipe: str = "default") -> dict[str, float]:
    """The TrainConfig learning-rate fields (``lr_<group>``) of a named recipe."""
    rates = recipe_rates(recipe)
    return {f"lr_{group}": rates[group] for group in LAYER_GROUPS}


def train_and_score(
    splits: Mapping[str, Any],
    fields: Mapping[str, Any],
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    precision: str = "auto",
    n_bootstrap: int = 0,
    work_dir: Path | None = None,
    device: str = DEVICE,
    curve: bool = False,
) -> dict[str, Any]:
    """Train on ``splits["train"]``/``["val"]`` and score the best epoch on ``splits["test"]``.

    fields: TrainConfig values of the run (a recipe's, e.g. ``recipe_fields(name)``); the
        data, the output folder, ``epochs``, ``batch_size``, ``seed``, ``precision`` and the
        device are set here and take precedence. The weights start random unless ``fields``
        names others (``"pretrained": "lensing"`` or a path: the transfer benchmark).
    precision: as ``TrainConfig.precision``; resolved once for training and scoring.
    n_bootstrap: bootstrap resamples of the test macro AUC's 95 % interval (0: none).
    work_dir: where the temporary training folder goes (default: the system's), deleted after.
    device: where to train and score ("cpu", the benchmarks' machine; "cuda" for a GPU run).
    curve: also score the test split (without D4 averaging) after every epoch, from that
        epoch's rolling checkpoint: the learning curve.

    Returns {"plain", "tta": the test scores without and with D4 averaging (``SCORES`` of
    ``compute_metrics``), "best_val_auc", "best_epoch", "train_seconds" (fit alone),
    "precision" (the resolved one), "history" (fit's per-epoch dicts), and with ``curve``
    "curve": per epoch {"epoch", "images_seen", "steps", "auc_macro", "accuracy",
    "score_seconds"}}. Fit's epoch lines go to stderr, so stdout keeps only the tables.
    """
    used = resolve_precision(precision, torch.device(device))
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench_train_") as out:
        config = TrainConfig(
            **(
                dict(fields)
                | {
                    "data_dir": str(splits["train"].root),
                    "out_dir": out,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "seed": seed,
                    "precision": used,
                    "pretrained": fields.get("pretrained", "none"),
                    "device": device,
                }
            )
        )
        points: list[dict[str, Any]] = []
        score_epoch = _curve_scorer(splits, config, used, points) if curve else None
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            trained = fit(
                config,
                {"train": splits["train"], "val": splits["val"]},
                on_epoch_end=score_epoch,
                progress=False,
            )
        seconds = time.perf_counter() - start - sum(p["score_seconds"] for p in points)
        model, best = load_trained_model(Path(out) / BEST_MODEL)
    scores = {}
    for kind, tta in (("plain", False), ("tta", True)):
        probs, labels = predict_split(
            model, splits["test"], device=device, precision=used, tta=tta, stretch=config.stretch
        )
        metrics = compute_metrics(labels, probs, CLASSES, n_bootstrap=n_bootstrap)
        scores[kind] = {key: metrics[key] for key in SCORES}
    return (
        scores
        | {
            "best_val_auc": best["val_auc"],
            "best_epoch": best["epoch"],
            "train_seconds": seconds,
            "precision": used,
            "history": trained["history"],
            "weights": trained["weights"],
        }
        | ({"curve": points} if curve else {})
    )


def _curve_scorer(
    splits: Mapping[str, Any], config: TrainConfig, precision: str, points: list[dict[str, Any]]
) -> Callable[[int, dict[str, Any]], None]:
    """fit's ``on_epoch_end``: score the epoch's rolling checkpoint on the test split (no D4)
    and append the point to ``points``; its own time is recorded so it can be taken off."""
    n_train = len(splits["train"])
    steps_per_epoch = math.ceil(n_train / config.batch_size)

    def score(epoch: int, entry: dict[str, Any]) -> None:
        start = time.perf_counter()
        model, _ = load_trained_model(Path(config.out_dir) / CHECKPOINT)
        probs, labels = predict_split(
            model,
            splits["test"],
            device=config.device,
            precision=precision,
            stretch=config.stretch,
        )
        metrics = compute_metrics(labels, probs, CLASSES, n_bootstrap=0)
        points.append(
            {
                "epoch": epoch,
                "images_seen": epoch * n_train,
                "steps": epoch * steps_per_epoch,
                "auc_macro": metrics["auc_macro"],
                "accuracy": metrics["accuracy"],
                "score_seconds": time.perf_counter() - start,
            }
        )

    return score
