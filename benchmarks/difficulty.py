"""How hard a simulated set is to learn: ``python -m benchmarks.difficulty --out FILE.json``.

For each preset (``test-i``, ``model-a``, ... with optional overrides, ``NAME:field=value``) it
simulates a set of ``--per-class`` images per class (train, val, test), trains the default
recipe from random weights for ``--epochs`` epochs at batch ``--batch-size`` with each seed,
and scores the test split with D4 averaging, beside the pixel-statistics baseline of
``benchmarks.separability`` on the same set. The difficulty issue's target for the stand-in:
test macro AUC 0.95-0.98 (mean of 3 seeds) at 2,000 / 250 / 500 per class and 6 epochs,
``sphere`` the hardest class, the baseline at most 0.60. Training runs on ``--device``
(a GPU makes the 3-seed grid a matter of minutes); ``--tiny`` runs every step in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, markdown_table
from benchmarks.scoring import train_and_score
from benchmarks.separability import measure_separability
from lensing.atomic import atomic_write_json
from lensing.constants import CLASSES
from lensing.data.dataset import load_splits
from lensing.simulate import get_preset, simulate_dataset
from lensing.training.recipes import recipe_fields


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"model-a:subhalo_mass=5e8/5e9,n_subhalos=30"`` -> ("model-a", {"subhalo_mass": (5e8,
    5e9), "n_subhalos": 30}): a range field takes ``low/high``, each value the field's type."""
    name, _, rest = spec.partition(":")
    base = get_preset(name)
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        field, _, value = item.partition("=")
        default = getattr(base, field, None)
        if isinstance(default, tuple):
            overrides[field] = tuple(float(v) for v in value.split("/"))
        else:
            overrides[field] = int(value) if isinstance(default, int) else float(value)
    get_preset(name, **overrides)  # fails early on an unknown field
    return name, overrides


def measure(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """One preset: simulate, baseline, then train and score every seed."""
    name, overrides = parse_spec(spec)
    counts = dict(zip(("train", "val", "test"), args.per_class, strict=True))
    folder = args.work / spec.replace(":", "_").replace("=", "-").replace(",", "_")
    started = time.perf_counter()
    simulate_dataset(folder, counts, seed=7, progress=False, preset=get_preset(name, **overrides))
    simulate_s = time.perf_counter() - started
    baseline = measure_separability(folder)["results"]["pixel-stats"]["test"]
    splits = load_splits(folder, progress=False)
    runs = []
    for seed in args.seeds:
        log(f"{spec}: seed {seed}")
        scored = train_and_score(
            splits,
            recipe_fields("default"),
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=seed,
            device=args.device,
            work_dir=args.work,
        )
        tta = scored["tta"]
        runs.append({"seed": seed, "train_seconds": scored["train_seconds"], **tta})
    return {
        "preset": name,
        "overrides": overrides,
        "per_class": counts,
        "simulate_seconds": simulate_s,
        "baseline_pixel_stats": baseline,
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of the macro AUC, accuracy and each class's AUC; the hardest
    class (lowest mean AUC)."""
    macro = np.array([r["auc_macro"] for r in runs])
    per_class = {c: float(np.mean([r["auc_per_class"][c] for r in runs])) for c in CLASSES}
    return {
        "auc_macro_mean": float(macro.mean()),
        "auc_macro_sd": float(macro.std(ddof=1)) if len(macro) > 1 else 0.0,
        "accuracy_mean": float(np.mean([r["accuracy"] for r in runs])),
        "auc_per_class_mean": per_class,
        "hardest": min(per_class, key=per_class.get),
    }


def difficulty_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            [
                r["preset"] + "".join(f" {k}={_shown(v)}" for k, v in r["overrides"].items()),
                len(r["runs"]),
                f"{s['auc_macro_mean']:.4f} +- {s['auc_macro_sd']:.4f}",
                *(s["auc_per_class_mean"][c] for c in CLASSES),
                s["hardest"],
                s["accuracy_mean"],
                r["baseline_pixel_stats"]["auc_macro"],
            ]
        )
    header = ["preset", "seeds", "test macro AUC (D4)", *CLASSES, "hardest"]
    return markdown_table([*header, "accuracy", "pixel-stats baseline"], rows)


def _shown(value: Any) -> str:
    return "/".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.difficulty",
        description="Test AUC of the default recipe over seeds on simulated presets, beside "
        "the pixel-statistics baseline.",
    )
    add = parser.add_argument
    add("--presets", nargs="+", default=["test-i", "model-a"], help="NAME[:field=value,...]")
    add("--per-class", nargs=3, type=int, default=[2000, 250, 500], help="train val test")
    add("--epochs", type=int, default=6)
    add("--batch-size", type=int, default=64)
    add("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add("--device", default="cpu", help="cpu or cuda")
    add("--work", type=Path, default=Path("data/difficulty"), help="simulated sets go here")
    add("--out", type=Path, default=Path("reports/difficulty.json"))
    add("--tiny", action="store_true", help="6/3/3 images per class, 1 epoch, seed 0")
    args = parser.parse_args(argv)
    if args.tiny:
        args.per_class, args.epochs, args.seeds, args.batch_size = [6, 3, 3], 1, [0], 8
    report = {"command": "python -m benchmarks.difficulty " + " ".join(argv or sys.argv[1:])}
    report |= {"epochs": args.epochs, "batch_size": args.batch_size, "results": []}
    for spec in args.presets:  # written after each preset, so a cut-short run keeps its part
        report["results"].append(measure(spec, args))
        atomic_write_json(args.out, report)
    print(difficulty_table(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
