"""Which training recipe to make the default: test AUC of each at equal budget, over seeds.

Every recipe trains a randomly initialized ResNet18 with ``lensing.training.fit.fit`` on the same
simulated images for the same epochs, keeps its best validation epoch, and is scored on the
same test images with and without D4 test-time averaging
(:func:`benchmarks.scoring.train_and_score`). Repeating with several seeds (the seed moves the
initialization, the data order and the augmentation draws) gives the mean and standard
deviation of the test macro AUC, so a difference can be told from noise.

``python -m benchmarks.compare_recipes --data DIR [--epochs E] [--seeds 0 1 2] [--only NAME ...]``
prints the table and writes ``reports/recipes.json`` after every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, machine, markdown_table
from benchmarks.scoring import rate_fields, train_and_score
from lensing.core.atomic import atomic_write_json
from lensing.core.constants import CLASSES, REPORTS_DIR
from lensing.data.dataset import load_splits
from lensing.training.recipes import recipe_fields

DEFAULT_RATES = rate_fields("default")
# name: TrainConfig values of each candidate. The package's named recipes (``seed-notebook``
# keeps its own per-group rates) and variants of the default at the default recipe's rates
# (1e-3 in every group: from random weights there is no pretrained early layer to protect).
CANDIDATES: dict[str, dict[str, Any]] = {
    "seed-notebook": recipe_fields("seed-notebook"),
    "d4 + plateau": {"augment": "d4", "schedule": "plateau", **DEFAULT_RATES},
    "flip-affine + onecycle": {"augment": "flip-affine", "schedule": "onecycle", **DEFAULT_RATES},
    "d4 + onecycle": {"augment": "d4", "schedule": "onecycle", **DEFAULT_RATES},
    "d4 + onecycle + arcsinh": {
        "augment": "d4",
        "schedule": "onecycle",
        "stretch": "arcsinh",
        **DEFAULT_RATES,
    },
    "d4 + onecycle + log": {
        "augment": "d4",
        "schedule": "onecycle",
        "stretch": "log",
        **DEFAULT_RATES,
    },
}
COMPARED = tuple(CANDIDATES)  # what a comparison takes unless told otherwise
CANDIDATES["default"] = recipe_fields("default")  # TrainConfig's defaults, whichever they are
KEPT = ("best_val_auc", "best_epoch", "train_seconds", "plain", "tta")  # of each scored run


def compare_recipes(
    splits: dict[str, Any],
    epochs: int,
    seeds: list[int],
    names: list[str] | None = None,
    batch_size: int = 64,
    out: Path | None = None,
) -> dict[str, Any]:
    """Every chosen recipe (default: those in ``COMPARED``) for every seed, on the splits
    {"train", "val", "test"}; the results dict (also written to ``out`` after each run)."""
    names = names or list(COMPARED)
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
            scored = train_and_score(
                splits, CANDIDATES[name], epochs=epochs, batch_size=batch_size, seed=seed
            )
            plain, tta = scored["plain"]["auc_macro"], scored["tta"]["auc_macro"]
            log(f"  test AUC {plain:.4f}, TTA {tta:.4f}")
            results["runs"][name].append({key: scored[key] for key in KEPT} | {"seed": seed})
            if out is not None:
                atomic_write_json(out, results)
    return results


def comparison_table(results: dict[str, Any]) -> str:
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
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_recipes", description=__doc__
    )
    parser.add_argument("--data", type=Path, required=True, help="a simulated set")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="these recipes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "recipes.json")
    args = parser.parse_args(argv)
    splits = load_splits(args.data, progress=False)
    results = compare_recipes(
        splits, args.epochs, args.seeds, args.only, args.batch_size, args.out
    )
    print(comparison_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
