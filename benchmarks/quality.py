"""Test AUC at equal budget: the seed recipe against the improved recipe.

Every recipe trains a randomly initialized ResNet18 for the same number of epochs on the same
simulated images, keeps the epoch with the best validation macro AUC, and is scored on the same
test images with ``lensing.evaluate.compute_metrics`` (macro and per-class one-vs-rest AUC,
95 % stratified bootstrap interval of the macro AUC).

- ``seed``: :mod:`benchmarks.seed_recipe` (224 x 224 RGB copies, torchvision's random flip,
  rotation, shift and zoom, one constant Adam learning rate, fp32, no test-time augmentation);
- ``improved``: the package's pieces (``TrainBatches``, ``train_one_epoch``, ``make_optimizer``,
  ``validate``, ``predict``) with ``augment="d4"`` (the 8 exact flips and quarter turns of the
  square sky image, no interpolation), D4 test-time averaging, the package's default precision
  and a one-cycle learning-rate schedule stepped every batch (``schedule="onecycle"``): warm-up
  over the first quarter of the steps, then cosine decay to almost zero. ``lensing.train.fit``
  has only ReduceLROnPlateau so far; this loop is the proposed ``schedule`` option, measured;
- ``package_fit``: ``lensing.train.fit`` as it is (ReduceLROnPlateau), D4 and D4 averaging,
  for reference.

The improved recipe is also trained in fp32 when the default is bf16, to show that the
precision does not move the AUC beyond its interval.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import log, markdown_table
from benchmarks.seed_recipe import BATCH_SIZE, seed_fit, seed_loader, seed_predict
from lensing.config import CLASSES, DATA_DIR
from lensing.evaluate import compute_metrics, predict
from lensing.model import build_model, resolve_precision
from lensing.train import (
    TrainBatches,
    TrainConfig,
    fit,
    load_checkpoint,
    make_optimizer,
    prepare_model,
    train_one_epoch,
    validate,
)

# Peak learning rate of every layer group in the improved recipe: the seed's 1e-3 everywhere
# (from random weights there is no pretrained early layer to protect). On the quick set's
# validation split (500 per class, 4 epochs, bf16) the one-cycle peak 1e-3 reached val AUC
# 0.925, 2e-3 0.910, 3e-3 0.799, and the plateau schedule at 1e-3 0.835.
IMPROVED_LRS = {"lr_early": 1e-3, "lr_middle": 1e-3, "lr_late": 1e-3, "lr_fc": 1e-3}
PACKAGE_FIT_LRS = dict(IMPROVED_LRS)  # fit() as it is gets the same learning rates
ONECYCLE_WARMUP = 0.25  # share of the steps spent raising the learning rate
N_BOOTSTRAP = 1000
CPU = torch.device("cpu")


def _summary(metrics: dict[str, Any], seconds: float, **extra: Any) -> dict[str, Any]:
    keep = ("auc_macro", "auc_per_class", "auc_macro_ci95", "accuracy", "confusion_matrix")
    return {k: metrics[k] for k in keep} | {"train_seconds": seconds} | extra


def seed_quality(datasets: dict[str, Any], epochs: int, batch_size: int = BATCH_SIZE) -> dict:
    """Train and score the seed recipe; returns its test metrics summary."""
    pairs = {s: (list(d.files), d.labels.tolist()) for s, d in datasets.items()}
    start = time.perf_counter()
    trained = seed_fit(pairs["train"], pairs["val"], epochs, batch_size=batch_size, log=log)
    seconds = time.perf_counter() - start
    probs, labels = seed_predict(trained["model"], seed_loader(*pairs["test"], train=False))
    metrics = compute_metrics(labels, probs, CLASSES, n_bootstrap=N_BOOTSTRAP)
    return _summary(
        metrics,
        seconds,
        best_val_auc=trained["best_val_auc"],
        best_epoch=trained["best_epoch"],
        history=trained["history"],
    )


def _stepping(batches: Iterable, scheduler: Any) -> Iterator:
    """The batches, stepping ``scheduler`` after each one has been trained on."""
    for batch in batches:
        yield batch
        scheduler.step()


def train_onecycle(
    datasets: dict[str, Any],
    epochs: int,
    *,
    precision: str,
    batch_size: int = BATCH_SIZE,
    lrs: dict[str, float] | None = None,
    augment: str = "d4",
    seed: int = 0,
) -> dict[str, Any]:
    """Train with the package's pieces and a per-step one-cycle schedule; keep the best epoch.

    Returns {"model" (best weights, CPU), "history", "best_val_auc", "best_epoch"}.
    """
    lrs = dict(IMPROVED_LRS if lrs is None else lrs)
    torch.manual_seed(seed)
    config = TrainConfig(batch_size=batch_size, pretrained="none", augment=augment, **lrs)
    model = prepare_model(build_model("none"), CPU, config.channels_last)
    optimizer = make_optimizer(model, config)
    batches = TrainBatches(datasets["train"], batch_size, torch.Generator().manual_seed(seed), CPU)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=len(batches) * epochs,
        pct_start=ONECYCLE_WARMUP,
    )
    generator = torch.Generator().manual_seed(seed + 1)
    criterion = nn.CrossEntropyLoss()
    history, best_auc, best_state, best_epoch = [], -1.0, None, 0
    for epoch in range(1, epochs + 1):
        trained = train_one_epoch(
            model,
            criterion,
            optimizer,
            _stepping(batches, scheduler),
            device=CPU,
            precision=precision,
            augment=augment,
            generator=generator,
            progress=False,
        )
        val = validate(model, datasets["val"], device=CPU, precision=precision)
        history.append({"epoch": epoch, **trained, **val})
        if val["val_auc"] > best_auc:
            best_auc, best_epoch = val["val_auc"], epoch
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return {"model": model, "history": history, "best_val_auc": best_auc, "best_epoch": best_epoch}


def train_with_fit(
    datasets: dict[str, Any],
    epochs: int,
    *,
    precision: str,
    batch_size: int = BATCH_SIZE,
    lrs: dict[str, float] | None = None,
    augment: str = "d4",
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Train with ``lensing.train.fit`` as it is; same return value as train_onecycle."""
    lrs = dict(PACKAGE_FIT_LRS if lrs is None else lrs)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench_quality_") as out:
        config = TrainConfig(
            data_dir=str(datasets["train"].root),
            out_dir=out,
            epochs=epochs,
            batch_size=batch_size,
            pretrained="none",
            precision=precision,
            augment=augment,
            **lrs,
        )
        subset = {"train": datasets["train"], "val": datasets["val"]}
        result = fit(config, datasets=subset, progress=False)
        best = load_checkpoint(result["best_checkpoint"])
    model = build_model("none")
    model.load_state_dict(best["model"])
    return {
        "model": model,
        "history": result["history"],
        "best_val_auc": best["val_auc"],
        "best_epoch": best["epoch"],
    }


def improved_quality(
    datasets: dict[str, Any],
    epochs: int,
    *,
    schedule: str = "onecycle",
    precision: str = "auto",
    batch_size: int = BATCH_SIZE,
    lrs: dict[str, float] | None = None,
    augment: str = "d4",
    work_dir: Path | None = None,
) -> dict:
    """Train our recipe (schedule "onecycle" or "plateau" = fit as it is) and score it on the
    test split with and without D4 averaging."""
    if schedule not in ("onecycle", "plateau"):
        raise ValueError(f"unknown schedule {schedule!r}; expected 'onecycle' or 'plateau'")
    used = resolve_precision(precision, CPU)
    options = dict(precision=used, batch_size=batch_size, lrs=lrs, augment=augment)
    start = time.perf_counter()
    if schedule == "onecycle":
        trained = train_onecycle(datasets, epochs, **options)
    else:
        trained = train_with_fit(datasets, epochs, work_dir=work_dir, **options)
    seconds = time.perf_counter() - start
    scored = {}
    for tta in (True, False):
        probs, labels = predict(
            trained["model"], datasets["test"], device=CPU, precision=used, tta=tta
        )
        scored[tta] = compute_metrics(labels, probs, CLASSES, n_bootstrap=N_BOOTSTRAP)
    for entry in trained["history"]:
        log(
            f"ours ({schedule}, {augment}, {used}) epoch {entry['epoch']}/{epochs} loss "
            f"{entry['train_loss']:.4f} val AUC {entry['val_auc']:.4f} "
            f"{entry['images_per_s']:.1f} img/s"
        )
    lr_used = lrs or (IMPROVED_LRS if schedule == "onecycle" else PACKAGE_FIT_LRS)
    return _summary(
        scored[True],
        seconds,
        schedule=schedule,
        precision=used,
        augment=augment,
        learning_rates=dict(lr_used),
        best_val_auc=trained["best_val_auc"],
        best_epoch=trained["best_epoch"],
        history=[
            {k: v for k, v in e.items() if k in ("epoch", "train_loss", "val_auc", "val_loss")}
            | {"images_per_s": e["images_per_s"]}
            for e in trained["history"]
        ],
        without_tta=_summary(scored[False], seconds),
    )


def run_quality(
    datasets: dict[str, Any],
    epochs: int,
    *,
    batch_size: int = BATCH_SIZE,
    compare_precision: bool = True,
    package_fit: bool = True,
    work_dir: Path = DATA_DIR,
) -> dict[str, Any]:
    """Seed against improved at ``epochs`` each; returns the ``quality`` entry of
    benchmarks.json.

    compare_precision: when the default precision is bf16, also train the improved recipe in
    fp32 and say whether its AUC lies in the bf16 run's 95 % interval. package_fit: also train
    with ``lensing.train.fit`` as it is (plateau schedule).
    """
    counts = {split: d.class_counts() for split, d in datasets.items()}
    log(f"quality: {counts}, {epochs} epochs each")
    work_dir.mkdir(parents=True, exist_ok=True)
    seed = seed_quality(datasets, epochs, batch_size)
    default = resolve_precision("auto", CPU)
    improved = improved_quality(datasets, epochs, precision=default, batch_size=batch_size)
    seed_error = 1 - seed["auc_macro"]
    result: dict[str, Any] = {
        "data": str(datasets["train"].root),
        "images_per_class": {split: min(c.values()) for split, c in counts.items()},
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "improved": improved,
        "error_ratio": _ratio(1 - improved["auc_macro"], seed_error),
    }
    if compare_precision and default == "bf16":
        fp32 = improved_quality(datasets, epochs, precision="fp32", batch_size=batch_size)
        result["improved_fp32"] = fp32
        low, high = improved["auc_macro_ci95"]
        result["precision_match"] = {
            "bf16": improved["auc_macro"],
            "fp32": fp32["auc_macro"],
            "difference": fp32["auc_macro"] - improved["auc_macro"],
            "bf16_ci95": [low, high],
            "fp32_within_bf16_ci95": bool(low <= fp32["auc_macro"] <= high),
        }
    if package_fit:
        as_is = improved_quality(
            datasets,
            epochs,
            schedule="plateau",
            precision=default,
            batch_size=batch_size,
            work_dir=work_dir,
        )
        result["package_fit"] = as_is
        result["error_ratio_package_fit"] = _ratio(1 - as_is["auc_macro"], seed_error)
    return result


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def quality_table(result: dict[str, Any]) -> str:
    """Markdown table of a run_quality result."""
    rows = []

    def row(name: str, entry: dict[str, Any]) -> None:
        low, high = entry["auc_macro_ci95"]
        per_class = [entry["auc_per_class"][c] for c in CLASSES]
        rows.append(
            [
                name,
                entry["auc_macro"],
                f"{low:.3f}-{high:.3f}",
                *per_class,
                1 - entry["auc_macro"],
                entry["train_seconds"],
            ]
        )

    row("seed recipe (224 RGB, torchvision aug, constant lr, fp32)", result["seed"])
    improved = result["improved"]
    name = f"improved: D4 + one-cycle, {improved['precision']}"
    row(f"{name}, D4 TTA", improved)
    row(f"{name}, no TTA", improved["without_tta"])
    if "improved_fp32" in result:
        row("improved: D4 + one-cycle, fp32, D4 TTA", result["improved_fp32"])
    if "package_fit" in result:
        row(
            f"lensing.train.fit as is (D4, plateau, {result['package_fit']['precision']}), D4 TTA",
            result["package_fit"],
        )
    n = result["images_per_class"]
    title = (
        f"Test AUC at equal budget: {result['epochs']} epochs, {n['train']}/{n['val']}/"
        f"{n['test']} train/val/test images per class (simulated), random init, batch "
        f"{result['batch_size']}; error ratio improved/seed = {result['error_ratio']:.2f}"
    )
    headers = [
        "recipe",
        "macro AUC",
        "95% CI",
        *[f"AUC {c}" for c in CLASSES],
        "1 - AUC",
        "train s",
    ]
    return f"{title}\n\n{markdown_table(headers, rows)}"
