"""How hard a simulated set is to learn, as learning curves: ``python -m benchmarks.difficulty``.

For each preset (``test-i``, ``model-a``, ... with optional overrides, ``NAME:field=value``) it
simulates ``--per-class`` images per class (train, val, test), fits the pixel-statistics
baseline of ``benchmarks.separability`` on it, and trains each ``--recipes`` variant from each
of the ``--pretrained`` starting points (``none``: random weights, the default; ``lensing``:
the package's lensing weights; a weights file, e.g. one pretrained with a family held out)
for ``--epochs`` epochs with each seed: the transfer benchmark. After every epoch the test
split is scored (no test-time averaging) from that epoch's checkpoint: test macro AUC against
images seen and optimizer steps, the learning curve. At the end the best validation epoch is
scored with D4 averaging. It prints two tables: the end points (mean +- sd over seeds, each
class's AUC, the hardest class, accuracy, the baseline, and the starting weights' own AUC
before fine-tuning) and the curves.

The target set for the stand-in: test macro AUC 0.95-0.98 (mean of 3 seeds) at
2,000 / 250 / 500 per class and 6 epochs, ``sphere`` the hardest class, the baseline at most
0.60. Training runs on ``--device`` (a GPU makes the 3-seed grid a matter of minutes);
``--tiny`` runs every step in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, machine, markdown_table
from benchmarks.scoring import train_and_score
from benchmarks.separability import measure_separability
from lensing.core.atomic import atomic_write_json
from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.core.metrics import class_recalls
from lensing.data.dataset import load_splits
from lensing.simulate import get_preset, simulate_dataset
from lensing.training.recipes import recipe_fields

# The training variants a curve can compare: the named recipes and single levers on them
# (TrainConfig fields; ``batch_size`` overrides ``--batch-size``). The "from-scratch, ..."
# levers were measured as "default, ..." while the default rates were 1e-3 for every group.
SCRATCH = recipe_fields("from-scratch")
VARIANTS: dict[str, dict[str, Any]] = {
    "default": recipe_fields("default"),
    "from-scratch": SCRATCH,
    "seed-notebook": recipe_fields("seed-notebook"),
    "from-scratch, batch 32": SCRATCH | {"batch_size": 32},
    "from-scratch, arcsinh": SCRATCH | {"stretch": "arcsinh"},
    "from-scratch, weight decay 1e-4": SCRATCH | {"weight_decay": 1e-4},
    "from-scratch, lr 3e-4": SCRATCH | {f"lr_{g}": 3e-4 for g in LAYER_GROUPS},
    "from-scratch, lr 1e-4": SCRATCH | {f"lr_{g}": 1e-4 for g in LAYER_GROUPS},
    # The other backbone (lensing.model.equivariant), from random weights: none pretrained exist.
    "from-scratch, d4-resnet": SCRATCH | {"model": "d4-resnet"},
    "from-scratch, d4-resnet, warm-up 0.1": SCRATCH
    | {"model": "d4-resnet", "onecycle_warmup": 0.1},
    # Per-group rates for fine-tuning pretrained weights: early layers move less. "gentle" is
    # the default since it measured best (docs/pretraining.md); "graded" moves them more.
    "graded": recipe_fields("default")
    | {"lr_early": 1e-4, "lr_middle": 3e-4, "lr_late": 1e-3, "lr_fc": 1e-3},
    "gentle": recipe_fields("default")
    | {"lr_early": 1e-5, "lr_middle": 1e-4, "lr_late": 3e-4, "lr_fc": 1e-3},
}


def zero_shot(weights: str, test: Any, device: str) -> float | None:
    """Test macro AUC of the starting weights before any fine-tuning (None for random ones)."""
    if weights == "none":
        return None
    from lensing.core.metrics import compute_metrics
    from lensing.model.inference import predict_split
    from lensing.model.network import build_model

    probs, labels = predict_split(build_model(weights), test, device=device, precision="auto")
    return float(compute_metrics(labels, probs, CLASSES, n_bootstrap=0)["auc_macro"])


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


def set_folder(work: Path, spec: str, counts: dict[str, int]) -> Path:
    """Where the set of ``spec`` at ``counts`` images per class is simulated (and reused)."""
    name = spec.replace(":", "_").replace("=", "-").replace(",", "_").replace("/", "-")
    return work / f"{name}_{counts['train']}-{counts['val']}-{counts['test']}"


def measure(spec: str, args: argparse.Namespace, report: dict[str, Any]) -> None:
    """One preset: simulate, baseline, then train and score every variant with every seed;
    ``report["results"]`` gets one entry per variant, written after every run."""
    name, overrides = parse_spec(spec)
    counts = dict(zip(("train", "val", "test"), args.per_class, strict=True))
    folder = set_folder(args.work, spec, counts)
    started = time.perf_counter()
    simulate_dataset(folder, counts, seed=7, progress=False, preset=get_preset(name, **overrides))
    simulate_s = time.perf_counter() - started
    baseline = measure_separability(folder)["results"]["pixel-stats"]["test"]
    splits = load_splits(folder, progress=False)
    for weights, variant in [(w, v) for w in args.pretrained for v in args.recipes]:
        fields = dict(VARIANTS[variant]) | {"pretrained": weights}
        batch_size = fields.pop("batch_size", args.batch_size)
        result = {
            "preset": name,
            "overrides": overrides,
            "recipe": variant,
            "pretrained": weights,
            "zero_shot_auc": zero_shot(weights, splits["test"], args.device),
            "batch_size": batch_size,
            "per_class": counts,
            "simulate_seconds": simulate_s,
            "baseline_pixel_stats": baseline,
            "runs": [],
        }
        report["results"].append(result)
        for seed in args.seeds:
            log(f"{spec}, {variant}, from {weights}: seed {seed}")
            scored = train_and_score(
                splits,
                fields,
                epochs=args.epochs,
                batch_size=batch_size,
                seed=seed,
                device=args.device,
                work_dir=args.work,
                curve=True,
            )
            result["runs"].append(
                {
                    "seed": seed,
                    "train_seconds": scored["train_seconds"],
                    "best_epoch": scored["best_epoch"],
                    "weights": scored["weights"],
                    "curve": scored["curve"],
                    **scored["tta"],
                }
            )
            result["summary"] = summarize(result["runs"])
            atomic_write_json(args.out, report)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of the macro AUC, accuracy, each class's AUC and recall, and of
    each epoch's curve point; the hardest class (lowest mean AUC)."""
    macro = np.array([r["auc_macro"] for r in runs])
    per_class = {c: float(np.mean([r["auc_per_class"][c] for r in runs])) for c in CLASSES}
    recalls = [class_recalls(r["confusion_matrix"], CLASSES) for r in runs]
    return {
        "auc_macro_mean": float(macro.mean()),
        "auc_macro_sd": _sd(macro),
        "accuracy_mean": float(np.mean([r["accuracy"] for r in runs])),
        "auc_per_class_mean": per_class,
        "recall_per_class_mean": {c: float(np.mean([r[c] for r in recalls])) for c in CLASSES},
        "hardest": min(per_class, key=per_class.get),
        "curve": [
            {
                "epoch": points[0]["epoch"],
                "images_seen": points[0]["images_seen"],
                "steps": points[0]["steps"],
                "auc_macro_mean": float(np.mean([p["auc_macro"] for p in points])),
                "auc_macro_sd": _sd(np.array([p["auc_macro"] for p in points])),
                "accuracy_mean": float(np.mean([p["accuracy"] for p in points])),
            }
            for points in zip(*(r["curve"] for r in runs), strict=True)
        ],
    }


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _label(result: dict[str, Any]) -> str:
    return result["preset"] + "".join(f" {k}={_shown(v)}" for k, v in result["overrides"].items())


def difficulty_table(results: list[dict[str, Any]]) -> str:
    """The end points: best validation epoch, D4 averaging, over seeds."""
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            [
                _label(r),
                r["recipe"],
                _weights(r),
                len(r["runs"]),
                "-" if r.get("zero_shot_auc") is None else f"{r['zero_shot_auc']:.4f}",
                f"{s['auc_macro_mean']:.4f} +- {s['auc_macro_sd']:.4f}",
                *(s["auc_per_class_mean"][c] for c in CLASSES),
                s["hardest"],
                s["accuracy_mean"],
                " / ".join(f"{s['recall_per_class_mean'][c]:.2f}" for c in CLASSES),
                r["baseline_pixel_stats"]["auc_macro"],
            ]
        )
    header = ["preset", "recipe", "weights", "seeds", "before fine-tuning"]
    header += ["test macro AUC (D4)", *CLASSES]
    header += ["hardest"]
    header += ["accuracy", "recall no / sphere / vort", "pixel-stats baseline"]
    return markdown_table(header, rows)


def curve_table(results: list[dict[str, Any]]) -> str:
    """Test macro AUC (no D4) after every epoch against images seen and optimizer steps."""
    rows = []
    for r in results:
        for point in r["summary"]["curve"]:
            rows.append(
                [
                    _label(r),
                    r["recipe"],
                    _weights(r),
                    point["epoch"],
                    f"{point['images_seen']:,}",
                    point["steps"],
                    f"{point['auc_macro_mean']:.3f} +- {point['auc_macro_sd']:.3f}",
                    point["accuracy_mean"],
                    r["baseline_pixel_stats"]["auc_macro"],
                ]
            )
    header = ["preset", "recipe", "weights", "epoch", "images seen", "steps", "test macro AUC"]
    return markdown_table([*header, "accuracy", "pixel-stats baseline"], rows)


def _weights(result: dict[str, Any]) -> str:
    """The starting weights as the runs recorded them (``lensing:<hash>``, a path, none)."""
    recorded = {run.get("weights") for run in result["runs"]} - {None}
    return ", ".join(sorted(recorded)) or result.get("pretrained", "none")


def _shown(value: Any) -> str:
    return "/".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.difficulty",
        description="Learning curves of training variants over seeds on simulated presets, "
        "beside the pixel-statistics baseline.",
    )
    add = parser.add_argument
    add("--presets", nargs="+", default=["test-i", "model-a"], help="NAME[:field=value,...]")
    add("--recipes", nargs="+", default=["default"], choices=list(VARIANTS))
    add("--pretrained", nargs="+", default=["none"], help="none, lensing, imagenet or PATHs")
    add("--per-class", nargs=3, type=int, default=[2000, 250, 500], help="train val test")
    add("--epochs", type=int, default=None, help="6 (--tiny: 1)")
    add("--batch-size", type=int, default=64)
    add("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add("--device", default="cpu", help="cpu or cuda")
    add("--work", type=Path, default=Path("data/difficulty"), help="simulated sets go here")
    add("--out", type=Path, default=Path("reports/difficulty.json"))
    add("--tiny", action="store_true", help="6/3/3 images per class, seed 0, batch 8")
    args = parser.parse_args(argv)
    if args.tiny:
        args.per_class, args.seeds, args.batch_size = [6, 3, 3], [0], 8
    if args.epochs is None:
        args.epochs = 1 if args.tiny else 6
    report = {"command": "python -m benchmarks.difficulty " + " ".join(argv or sys.argv[1:])}
    report |= {"epochs": args.epochs, "machine": machine(), "results": []}
    for spec in args.presets:
        measure(spec, args, report)
    print(difficulty_table(report["results"]))
    print()
    print(curve_table(report["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
