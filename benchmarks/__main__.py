"""Benchmarks against the seed recipe: ``python -m benchmarks [--full] [--out FILE]``.

Runs, in order (``--only`` picks some):

- ``speed``: training images/s, the seed pipeline against the package's
  (``lensing.training.fit``), and against the
  model alone (``train_speedup_vs_seed``, ``pipeline_efficiency``);
- ``recipes``: test AUC of the training recipes at the main job's budget (``recipes``): the
  seed notebook's against the package default, over seeds (``benchmarks.recipes``);
- ``quality``: test AUC of the seed notebook's own pipeline against ours (``quality``);
- ``search``: the full grid against pruned searches (``search_cost``);
- ``simulate``: simulator images/s (``simulate_images_per_s``);
- ``load``: cold and cached load time of a 30,000-image split (``load_seconds``).

Each prints a markdown table on stdout (progress goes to stderr) and the results, with the
machine they ran on, are written to ``reports/benchmarks.json`` after every benchmark, so an
interrupted run keeps what it measured. The simulated set is made once in
``data/bench_sim`` (``data/bench_sim_full`` for ``--full``) and reused. The quick profile
(speed, recipes, simulate, load) is sized for 20 minutes on a 2-core CPU without native bf16;
``--full`` runs everything, the recipes over 3 seeds and at a longer budget too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    BENCH_SIM_DIR,
    BENCH_SIM_FULL_DIR,
    ensure_sim_set,
    first_per_class,
    machine,
)
from lensing.atomic import atomic_write_json
from lensing.constants import DATA_DIR, REPORTS_DIR

BENCHMARKS = ("speed", "recipes", "quality", "search", "simulate", "load")
TARGETS = {  # key: (threshold, "min" = at least, "max" = at most)
    "train_speedup_vs_seed": (5.0, "min"),
    "pipeline_efficiency": (0.90, "min"),
    "quality_error_ratio": (0.5, "max"),
}
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "benchmarks": ("speed", "recipes", "simulate", "load"),
        "sim_dir": BENCH_SIM_DIR,
        # Images per class: the main job's quick profile (lensing/run.py), so the recipes are
        # compared at the budget a user's first run has.
        "sim_counts": {"train": 400, "val": 100, "test": 150},
        "batch_size": 32,
        "speed_steps": 8,
        "speed_warmup": 2,
        "speed_repeats": 3,  # a median of 3: the speed-up target has a margin of ~5 %
        "speed_compile": False,
        "recipes": [{"epochs": 6, "seeds": (0,), "names": ("seed-notebook", "default")}],
        "quality_epochs": 4,
        "search_train_per_class": 400,
        "search_epochs": 3,
        "search_modes": ("none", "halving"),
        "simulate_per_class": 100,
        "load_images": 30_000,
    },
    "full": {
        "benchmarks": BENCHMARKS,
        "sim_dir": BENCH_SIM_FULL_DIR,
        "sim_counts": {"train": 1000, "val": 250, "test": 500},
        "batch_size": 32,
        "speed_steps": 30,
        "speed_warmup": 5,
        "speed_repeats": 3,
        "speed_compile": True,
        # The quick budget over 3 seeds (on the first 400 / 100 / 150 per class), then a longer
        # budget with 1 seed on the whole set.
        "recipes": [
            {"epochs": 6, "seeds": (0, 1, 2), "names": None, "per_class": (400, 100, 150)},
            {"epochs": 12, "seeds": (0,), "names": None},
        ],
        "quality_epochs": 8,
        "search_train_per_class": 1000,
        "search_epochs": 5,
        "search_modes": ("none", "median", "halving"),
        "simulate_per_class": 300,
        "load_images": 30_000,
    },
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Speed and quality of the package against the seed notebook recipe. "
        "Writes a JSON report and prints markdown tables.",
    )
    parser.add_argument("--full", action="store_true", help="the long profile (larger sets)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPORTS_DIR / "benchmarks.json",
        help="JSON report (%(default)s)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {','.join(BENCHMARKS)}; results already in --out "
        "for the others are kept (default: the profile's)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    return parser


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    values = {
        "train_speedup_vs_seed": results.get("train_speedup_vs_seed"),
        "pipeline_efficiency": results.get("pipeline_efficiency"),
        "quality_error_ratio": (results.get("quality") or {}).get("error_ratio"),
    }
    checked = {}
    for key, (threshold, kind) in TARGETS.items():
        value = values[key]
        if value is None:
            continue
        met = value >= threshold if kind == "min" else value <= threshold
        checked[key] = {
            "value": value,
            "target": f"{'>=' if kind == 'min' else '<='} {threshold}",
            "met": bool(met),
        }
    return checked


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen benchmarks, writing ``args.out`` after each; returns the results."""
    from lensing.data.dataset import load_splits

    profile_name = "full" if args.full else "quick"
    profile = PROFILES[profile_name]
    only = args.only or ",".join(profile["benchmarks"])
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {BENCHMARKS}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}; expected >= 1")
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    if args.out.is_file() and args.only:
        results = json.loads(args.out.read_text())
    results |= {
        "profile": profile_name,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "machine": machine(),
    }
    tables: list[str] = []
    started = time.perf_counter()

    def save() -> None:
        results["targets"] = _targets(results)
        results["seconds"] = time.perf_counter() - started
        if hasattr(os, "getloadavg"):  # other work on the machine makes figures noisy
            results["machine"]["load_average_at_end"] = list(os.getloadavg())
        atomic_write_json(args.out, results)

    def show(table: str) -> None:
        tables.append(table)
        print(table + "\n", flush=True)

    splits = None
    if {"speed", "recipes", "quality", "search"} & set(chosen):
        ensure_sim_set(profile["sim_dir"], profile["sim_counts"])
        splits = load_splits(profile["sim_dir"], progress=False)

    if "speed" in chosen:
        from benchmarks.speed import run_speed, speed_table

        speed = run_speed(
            splits["train"],
            batch_size=profile["batch_size"],
            steps=profile["speed_steps"],
            warmup=profile["speed_warmup"],
            repeats=profile["speed_repeats"],
            compile_model=profile["speed_compile"],
            thread_counts=(1,),
        )
        results["speed"] = speed
        results["train_speedup_vs_seed"] = speed["train_speedup_vs_seed"]
        results["pipeline_efficiency"] = speed["pipeline_efficiency"]
        save()
        show(speed_table(speed))

    if "recipes" in chosen:
        results["recipes"] = _run_recipes(profile, splits, show)
        save()

    if "quality" in chosen:
        from benchmarks.quality import quality_table, run_quality

        quality = run_quality(
            splits, profile["quality_epochs"], batch_size=profile["batch_size"], work_dir=DATA_DIR
        )
        results["quality"] = quality
        save()
        show(quality_table(quality))

    if "search" in chosen:
        from benchmarks.search_cost import run_search_cost, search_cost_table

        small = {
            "train": first_per_class(splits["train"], profile["search_train_per_class"]),
            "val": splits["val"],
        }
        search = run_search_cost(
            small,
            epochs=profile["search_epochs"],
            modes=profile["search_modes"],
            base_config={"batch_size": profile["batch_size"]},
            work_dir=DATA_DIR,
        )
        results["search_cost"] = search
        save()
        show(search_cost_table(search))

    simulate = load = None
    if "simulate" in chosen:
        from benchmarks.data_speed import simulate_rate

        simulate = simulate_rate(profile["simulate_per_class"], work_dir=DATA_DIR)
        results["simulate_images_per_s"] = simulate["images_per_s"]
        results["simulate"] = simulate
        save()
    if "load" in chosen:
        from benchmarks.data_speed import run_load_time

        if splits is None:
            ensure_sim_set(profile["sim_dir"], profile["sim_counts"])
            splits = load_splits(profile["sim_dir"], progress=False)
        load = run_load_time(
            profile["load_images"], splits["train"].images.numpy(), work_dir=DATA_DIR
        )
        results["load_seconds"] = load
        save()
    if simulate or load:
        from benchmarks.data_speed import data_speed_table

        show(data_speed_table(simulate, load))

    save()
    summary = [
        f"- {key}: {t['value']:.3f} (target {t['target']}): {'met' if t['met'] else 'MISSED'}"
        for key, t in results["targets"].items()
    ]
    summary = summary or ["- none measured in this run"]
    show(
        "Targets\n\n" + "\n".join(summary) + f"\n\nTotal {results['seconds']:.0f} s; "
        f"report {args.out}"
    )
    return results


def _run_recipes(profile: dict[str, Any], splits: dict[str, Any], show) -> list[dict[str, Any]]:
    """The profile's recipe comparisons, each printed as a table; their results."""
    from benchmarks.recipes import recipes_table, run_recipes

    measured = []
    for budget in profile["recipes"]:
        chosen = splits
        if budget.get("per_class"):
            chosen = {
                split: first_per_class(splits[split], n)
                for split, n in zip(("train", "val", "test"), budget["per_class"], strict=True)
            }
        names = list(budget["names"]) if budget["names"] else None
        result = run_recipes(
            chosen, budget["epochs"], list(budget["seeds"]), names, profile["batch_size"]
        )
        measured.append(result)
        show(recipes_table(result))
    return measured


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
