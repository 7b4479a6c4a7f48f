"""The benchmark suite against the seed notebook: ``python -m benchmarks [--full] [--out FILE]``.

Runs, in order (``--only`` picks some; ``BENCHMARKS`` names them, ``MEASURES`` runs them):

- ``speed``: training images/s, the seed notebook's pipeline against the package's
  (``lensing.training.fit``), and against the model alone (``train_speedup_vs_seed``,
  ``pipeline_efficiency``; ``benchmarks.speed``);
- ``recipes``: test AUC of the training recipes at the main job's budget (``recipes``): the
  seed notebook's against the package default, over seeds (``benchmarks.compare_recipes``);
- ``quality``: test AUC of the seed notebook's own pipeline against ours (``quality``;
  ``benchmarks.quality``);
- ``search``: the full grid against pruned searches (``search_cost``; ``benchmarks.search_cost``);
- ``simulate``: simulator images/s (``simulate_images_per_s``; ``benchmarks.data_speed``);
- ``load``: cold and cached load time of a 30,000-image split (``load_seconds``;
  ``benchmarks.data_speed``).

Each prints a markdown table on stdout (progress goes to stderr) and the results, with the
machine they ran on, are written to ``reports/benchmarks.json`` after every benchmark, so an
interrupted run keeps what it measured. The simulated set is made once in
``data/bench_sim`` (``data/bench_sim_full`` for ``--full``) and reused. The quick suite
(speed, recipes, simulate, load) is sized for 20 minutes on a 2-core CPU without native bf16;
``--full`` runs everything, the recipes over 3 seeds and at a longer budget too.

``python -m benchmarks`` is ``cli``; ``python -m benchmarks.<module>`` of a measured module is
``main_only``, the same with ``--only``. The suite lives here rather than in ``__main__`` so
that the modules it runs can call it back without importing an entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
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
from lensing.core.atomic import atomic_write_json
from lensing.core.constants import DATA_DIR, REPORTS_DIR

BENCHMARKS = ("speed", "recipes", "quality", "search", "simulate", "load")  # in running order
NEEDS_SPLITS = {"speed", "recipes", "quality", "search"}  # those that train on the simulated set
# What each benchmark's function returns: (the entries it adds to benchmarks.json, its table).
Measured = tuple[dict[str, Any], str]
TARGETS = {  # key: (threshold, "min" = at least, "max" = at most)
    "train_speedup_vs_seed": (5.0, "min"),
    "pipeline_efficiency": (0.90, "min"),
    "quality_error_ratio": (0.5, "max"),
}
SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "benchmarks": ("speed", "recipes", "simulate", "load"),
        "sim_dir": BENCH_SIM_DIR,
        # Images per class: the main job's quick budget (lensing/cli/run.py), so the recipes are
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
        description="Speed and quality of the package against the seed notebook. "
        "Writes a JSON report and prints markdown tables.",
    )
    parser.add_argument("--full", action="store_true", help="the long suite (larger sets)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPORTS_DIR / "benchmarks.json",
        help="JSON report (%(default)s)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {','.join(BENCHMARKS)}; results already in --out "
        "for the others are kept (default: the suite's)",
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


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen benchmarks, writing ``args.out`` after each; returns the results."""
    suite_name = "full" if args.full else "quick"
    suite = SUITES[suite_name]
    chosen = _chosen(args.only or ",".join(suite["benchmarks"]))
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}; expected >= 1")
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    if args.out.is_file() and args.only:
        results = json.loads(args.out.read_text())
    results |= {
        "suite": suite_name,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "machine": machine(),
    }
    started = time.perf_counter()

    def save() -> None:
        results["targets"] = _targets(results)
        results["seconds"] = time.perf_counter() - started
        if hasattr(os, "getloadavg"):  # other work on the machine makes figures noisy
            results["machine"]["load_average_at_end"] = list(os.getloadavg())
        atomic_write_json(args.out, results)

    splits = _sim_splits(suite) if set(chosen) & NEEDS_SPLITS else None
    for name in BENCHMARKS:  # in this order, whatever the order of --only
        if name in chosen:
            measured, table = MEASURES[name](suite, splits)
            results |= measured
            save()
            show(table)
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


def show(table: str) -> None:
    """A markdown table on stdout (progress goes to stderr)."""
    print(table + "\n", flush=True)


def _chosen(only: str) -> list[str]:
    """The benchmark names of a comma-separated list, checked."""
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {BENCHMARKS}")
    return chosen


def _sim_splits(suite: dict[str, Any]) -> dict[str, Any]:
    """The suite's simulated set (made on first use), loaded into memory."""
    from lensing.data.dataset import load_splits

    ensure_sim_set(suite["sim_dir"], suite["sim_counts"])
    return load_splits(suite["sim_dir"], progress=False)


def measure_speed(suite: dict[str, Any], splits: dict[str, Any]) -> Measured:
    from benchmarks.speed import run_speed, speed_table

    speed = run_speed(
        splits["train"],
        batch_size=suite["batch_size"],
        steps=suite["speed_steps"],
        warmup=suite["speed_warmup"],
        repeats=suite["speed_repeats"],
        compile_model=suite["speed_compile"],
        thread_counts=(1,),
    )
    measured = {
        "speed": speed,
        "train_speedup_vs_seed": speed["train_speedup_vs_seed"],
        "pipeline_efficiency": speed["pipeline_efficiency"],
    }
    return measured, speed_table(speed)


def measure_recipes(suite: dict[str, Any], splits: dict[str, Any]) -> Measured:
    """The suite's recipe comparisons (one per budget), their tables one after the other."""
    from benchmarks.compare_recipes import compare_recipes, comparison_table

    compared = []
    for budget in suite["recipes"]:
        chosen = splits
        if budget.get("per_class"):
            chosen = {
                split: first_per_class(splits[split], n)
                for split, n in zip(("train", "val", "test"), budget["per_class"], strict=True)
            }
        names = list(budget["names"]) if budget["names"] else None
        compared.append(
            compare_recipes(
                chosen, budget["epochs"], list(budget["seeds"]), names, suite["batch_size"]
            )
        )
    return {"recipes": compared}, "\n\n".join(comparison_table(result) for result in compared)


def measure_quality(suite: dict[str, Any], splits: dict[str, Any]) -> Measured:
    from benchmarks.quality import quality_table, run_quality

    quality = run_quality(
        splits, suite["quality_epochs"], batch_size=suite["batch_size"], work_dir=DATA_DIR
    )
    return {"quality": quality}, quality_table(quality)


def measure_search(suite: dict[str, Any], splits: dict[str, Any]) -> Measured:
    from benchmarks.search_cost import run_search_cost, search_cost_table

    small = {
        "train": first_per_class(splits["train"], suite["search_train_per_class"]),
        "val": splits["val"],
    }
    search = run_search_cost(
        small,
        epochs=suite["search_epochs"],
        modes=suite["search_modes"],
        base_config={"batch_size": suite["batch_size"]},
        work_dir=DATA_DIR,
    )
    return {"search_cost": search}, search_cost_table(search)


def measure_simulate(suite: dict[str, Any], splits: dict[str, Any] | None) -> Measured:
    from benchmarks.data_speed import data_speed_table, simulate_rate

    simulate = simulate_rate(suite["simulate_per_class"], work_dir=DATA_DIR)
    measured = {"simulate_images_per_s": simulate["images_per_s"], "simulate": simulate}
    return measured, data_speed_table(simulate, None)


def measure_load(suite: dict[str, Any], splits: dict[str, Any] | None) -> Measured:
    from benchmarks.data_speed import data_speed_table, run_load_time

    sources = (splits or _sim_splits(suite))["train"].images.numpy()
    load = run_load_time(suite["load_images"], sources, work_dir=DATA_DIR)
    return {"load_seconds": load}, data_speed_table(None, load)


# BENCHMARKS' name (what --only takes): the function measuring it, called with the suite and
# the simulated splits (None when no chosen benchmark trains).
MEASURES: dict[str, Callable[[dict[str, Any], dict[str, Any] | None], Measured]] = {
    "speed": measure_speed,
    "recipes": measure_recipes,  # benchmarks.compare_recipes
    "quality": measure_quality,
    "search": measure_search,  # benchmarks.search_cost
    "simulate": measure_simulate,  # benchmarks.data_speed
    "load": measure_load,  # benchmarks.data_speed
}


def cli(argv: list[str] | None = None) -> int:
    """``python -m benchmarks ARGV``: run the suite; returns the exit status (2: bad input)."""
    args = get_args_parser().parse_args(argv)
    try:
        measure(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main_only(only: str) -> int:
    """``python -m benchmarks.<module> [options]`` for a module the suite measures: the same
    as ``python -m benchmarks --only ONLY [options]``."""
    return cli(["--only", only, *sys.argv[1:]])
