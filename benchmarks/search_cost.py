"""What pruning buys in the learning-rate search: the full grid against pruned searches.

Each mode runs ``lensing.search.run_search`` on the same small grid, data and epochs, in its own
fresh folder (its own SQLite study), and we record the best validation AUC it found, the epochs
it trained in total and its wall time.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import log, markdown_table
from lensing.core.constants import DATA_DIR, LAYER_GROUPS
from lensing.search import run_search

# Four combinations that differ where it matters most at a small budget: the deep layers and
# the head. Two of them (lr_late 1e-4) learn too slowly to catch up, the case pruning is for.
SEARCH_GRID = {"early": [1e-3], "middle": [1e-3], "late": [1e-4, 1e-3], "fc": [1e-4, 1e-3]}


def run_search_cost(
    datasets: dict[str, Any],
    *,
    epochs: int,
    modes: tuple[str, ...] = ("none", "median", "halving"),
    grid: dict[str, list[float]] | None = None,
    base_config: dict[str, Any] | None = None,
    work_dir: Path = DATA_DIR,
) -> dict[str, Any]:
    """Run the search once per pruning mode; returns the ``search_cost`` entry.

    datasets: {"train", "val"} in-memory splits, shared by every mode.
    base_config: TrainConfig fields for every trial (default: random init, d4 augmentation,
    batch 32).
    """
    grid = dict(SEARCH_GRID if grid is None else grid)
    base = {"pretrained": "none", "augment": "d4", "batch_size": 32} | dict(base_config or {})
    work_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(dir=work_dir, prefix="bench_search_"))
    try:
        for mode in modes:
            start = time.perf_counter()
            table = run_search(
                data_dir=datasets["train"].root,
                out_dir=folder / mode,
                epochs=epochs,
                grid=grid,
                base_config=base,
                prune=mode,
                datasets=datasets,
                progress=False,
            )
            seconds = time.perf_counter() - start
            best = table.iloc[0]
            results[mode] = {
                "best_val_auc": float(best["val_auc"]),
                "best_params": {g: float(best[f"lr_{g}"]) for g in LAYER_GROUPS},
                "epochs_trained": int(table["epochs"].sum()),
                "combinations_pruned": int((table["state"] == "PRUNED").sum()),
                "seconds": seconds,
            }
            log(
                f"search prune={mode}: best val AUC {results[mode]['best_val_auc']:.4f}, "
                f"{results[mode]['epochs_trained']} epochs, {seconds:.0f} s"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    full = results.get("none")
    combos = math.prod(len(v) for v in grid.values())
    return {
        "grid": grid,
        "combinations": combos,
        "epochs_per_combination": epochs,
        "train_images": len(datasets["train"]),
        "val_images": len(datasets["val"]),
        "modes": results,
        "epochs_saved_share": {
            mode: 1 - r["epochs_trained"] / full["epochs_trained"]
            for mode, r in results.items()
            if full and mode != "none"
        },
        "same_best_as_full_grid": {
            mode: r["best_params"] == full["best_params"]
            for mode, r in results.items()
            if full and mode != "none"
        },
    }


def search_cost_table(result: dict[str, Any]) -> str:
    """Markdown table of a run_search_cost result."""
    rows = []
    full = result["modes"].get("none")
    for mode, r in result["modes"].items():
        best = "/".join(f"{r['best_params'][g]:.0e}" for g in LAYER_GROUPS)
        share = "" if full is None else f"{r['epochs_trained'] / full['epochs_trained']:.0%}"
        rows.append([mode, r["best_val_auc"], best, r["epochs_trained"], share, r["seconds"]])
    title = (
        f"Search cost: {result['combinations']} combinations x "
        f"{result['epochs_per_combination']} epochs, {result['train_images']} train / "
        f"{result['val_images']} val images"
    )
    headers = [
        "prune",
        "best val AUC",
        "best lr early/middle/late/fc",
        "epochs trained",
        "of full grid",
        "seconds",
    ]
    return f"{title}\n\n{markdown_table(headers, rows)}"


if __name__ == "__main__":
    from benchmarks.suite import main_only

    sys.exit(main_only("search"))
