"""Which training recipe to make the default: test AUC of each at equal budget, over seeds.

Every recipe trains a randomly initialized ResNet18 with ``lensing.training.fit.fit`` on the same
simulated images for the same epochs, keeps its best validation epoch, and is scored on the
same test images with and without D4 test-time averaging. Repeating with several seeds (the
seed moves the initialization, the data order and the augmentation draws) gives the mean and
standard deviation of the test macro AUC, so a difference can be told from noise.

``python -m benchmarks.recipes --data DIR [--epochs E] [--seeds 0 1 2] [--only NAME ...]``
prints the table and writes ``reports/recipes.json`` after every run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, machine, markdown_table
from lensing.atomic import atomic_write_json
from lensing.constants import CLASSES, REPORTS_DIR
from lensing.data.dataset import load_splits
from lensing.evaluation.inference import load_trained_model, predict_split
from lensing.evaluation.metrics import compute_metrics
from lensing.training.checkpoint import BEST_MODEL
from lensing.training.fit import TrainConfig, fit
from lensing.training.recipes import recipe_fields

ALL_1E3 = {"lr_early": 1e-3, "lr_middle": 1e-3, "lr_late": 1e-3, "lr_fc": 1e-3}
# name: TrainConfig values. The seed notebook's recipe keeps its own per-group rates; the others
# use 1e-3 in every group (from random weights there is no pretrained early layer to protect).
RECIPES: dict[str, dict[str, Any]] = {
    "seed-notebook": recipe_fields("seed-notebook"),
    "d4 + plateau": {"augment": "d4", "schedule": "plateau", **ALL_1E3},
    "flip-affine + onecycle": {"augment": "flip-affine", "schedule": "onecycle", **ALL_1E3},
    "d4 + onecycle": {"augment": "d4", "schedule": "onecycle", **ALL_1E3},
    "d4 + onecycle + arcsinh": {
        "augment": "d4",
        "schedule": "onecycle",
        "stretch": "arcsinh",
        **ALL_1E3,
    },
    "d4 + onecycle + log": {"augment": "d4", "schedule": "onecycle", "stretch": "log", **ALL_1E3},
}
VARIANTS = tuple(RECIPES)  # what a run compares unless told otherwise
RECIPES["default"] = recipe_fields("default")  # TrainConfig's defaults, whichever they are


def train_and_score(
    splits: dict[str, Any], recipe: dict[str, Any], epochs: int, seed: int, batch_size: int
) -> dict[str, Any]:
    """One recipe, one seed: test macro AUC with and without D4 averaging, and the seconds."""
    with tempfile.TemporaryDirectory(prefix="recipe-") as out:
        config = TrainConfig(
            data_dir=str(splits["train"].root),
            out_dir=out,
            epochs=epochs,
            batch_size=batch_size,
            pretrained="none",
            device="cpu",
            seed=seed,
            **recipe,
        )
        start = time.perf_counter()
        result = fit(config, {"train": splits["train"], "val": splits["val"]}, progress=False)
        seconds = time.perf_counter() - start
        model, _ = load_trained_model(Path(out) / BEST_MODEL)
    scores = {}
    for tta in (False, True):
        probs, labels = predict_split(
            model, splits["test"], device="cpu", precision="auto", tta=tta, stretch=config.stretch
        )
        metrics = compute_metrics(labels, probs, CLASSES, n_bootstrap=0)
        scores["tta" if tta else "plain"] = {
            "auc_macro": metrics["auc_macro"],
            "auc_per_class": metrics["auc_per_class"],
        }
    return {"best_val_auc": result["best_val_auc"], "train_seconds": seconds, **scores}


def run_recipes(
    splits: dict[str, Any],
    epochs: int,
    seeds: list[int],
    names: list[str] | None = None,
    batch_size: int = 64,
    out: Path | None = None,
) -> dict[str, Any]:
    """Every chosen recipe (default: every variant) for every seed, on the splits
    {"train", "val", "test"}; the results dict (also written to ``out`` after each run)."""
    names = names or list(VARIANTS)
    results: dict[str, Any] = {
        "data": str(splits["train"].root),
        "images_per_class": {s: min(d.class_counts().values()) for s, d in splits.items()},
        "epochs": epochs,
        "batch_size": batch_size,
        "seeds": seeds,
        "machine": machine(),
        "runs": {name: [] for name in names},
    }
    for seed in seeds:
        for name in names:
            log(f"recipes: {name}, seed {seed}, {epochs} epochs")
            run = train_and_score(splits, RECIPES[name], epochs, seed, batch_size)
            log(f"  test AUC {run['plain']['auc_macro']:.4f}, TTA {run['tta']['auc_macro']:.4f}")
            results["runs"][name].append(run | {"seed": seed})
            if out is not None:
                atomic_write_json(out, results)
    return results


def recipes_table(results: dict[str, Any]) -> str:
    """Mean and standard deviation over seeds of each recipe's test macro AUC."""
    rows = []
    for name, runs in results["runs"].items():
        if not runs:
            continue
        row = [name, len(runs)]
        for kind in ("plain", "tta"):
            aucs = np.array([r[kind]["auc_macro"] for r in runs])
            row.append(f"{aucs.mean():.3f} +- {aucs.std(ddof=1) if len(aucs) > 1 else 0:.3f}")
        hardest = min(CLASSES, key=lambda c: np.mean([r["tta"]["auc_per_class"][c] for r in runs]))
        row += [hardest, float(np.mean([r["train_seconds"] for r in runs]))]
        rows.append(row)
    n = results["images_per_class"]
    title = (
        f"Test macro AUC, {results['epochs']} epochs, {n['train']}/{n['val']}/{n['test']} "
        f"train/val/test images per class, random init, batch {results['batch_size']}, "
        f"seeds {results['seeds']} ({results['machine'].get('cpu', '?')}, "
        f"{results['machine'].get('auto_precision', '?')})"
    )
    headers = ["recipe", "runs", "AUC (mean +- sd)", "AUC with D4 TTA", "hardest class", "s/run"]
    return title + "\n\n" + markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipes", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="a simulated set")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), help="these recipes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "recipes.json")
    args = parser.parse_args(argv)
    splits = load_splits(args.data, progress=False)
    results = run_recipes(splits, args.epochs, args.seeds, args.only, args.batch_size, args.out)
    print(recipes_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
