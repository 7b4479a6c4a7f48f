"""``python -m lensing run``, the main job (``make run``): pick the data, execute the notebook
headless, leave the reports.

The real set in ``data/dataset`` is used when it is there; otherwise a small simulated set is
written into ``data/simulated`` (never into ``data/dataset``, which is the real download's) and
the job says so. The notebook then runs under papermill with a budget's parameters, leaving
``reports/classification_notebook.ipynb`` (executed), ``reports/metrics.json`` and
``reports/figures/*.png``. Re-running resumes the search where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from lensing.cli.choice import choose_data
from lensing.cli.options import EXIT_OK
from lensing.core import constants
from lensing.core.constants import (
    CLASSES,
    MODELS_DIR,
    NOTEBOOK,
    REPORTS_DIR,
    SPLITS,
)
from lensing.core.progress import NO_BARS_ENV
from lensing.search.grid import DEFAULT_GRID, grid_size
from lensing.training.config import TrainConfig
from lensing.training.recipes import recipe_rates

# Budgets: how much data and training a job gets. "quick" is sized for a 2-core laptop CPU: one
# combination, so that its few minutes go to a model that learns something (the README's
# Results, for the time it takes with and without native bf16). "full" is a longer search on a
# larger set.
BUDGETS = {
    "quick": {
        # A few minutes on a 2-core CPU: the whole pipeline end to end, fine-tuning the
        # pretrained weights (ImageNet's, else the package's lensing weights). From random
        # weights a ResNet18 does not learn the recalibrated `test-i` stand-in at this budget
        # (docs/simulated-data.md); from the lensing weights it does (the README's Results).
        "simulate": {"train": 400, "val": 100, "test": 150},  # images per class
        # On the real set the same budget: a stratified subset of each split, so the quick
        # budget takes the same few minutes (all 27,000 training images would take an hour).
        "real_subset": {"train": 400, "val": 100, "test": 150},
        "parameters": {
            # One combination: the default recipe's rate for each layer group.
            "grid": {group: [rate] for group, rate in recipe_rates("default").items()},
            "epochs_per_combination": 6,
            "additional_epochs": 0,
        },
    },
    "full": {
        "simulate": {"train": 1000, "val": 250, "test": 250},
        "real_subset": None,  # every image of the real set
        "parameters": {
            "grid": None,
            "epochs_per_combination": TrainConfig.epochs,  # a training run's default
            "additional_epochs": 5,
        },
    },
}


# Training images/s of the package's own loop (ResNet18, 150 px, from random weights), as
# measured by ``python -m benchmarks --only speed`` (2 cores, batch 32) and ``python -m
# benchmarks.gpu`` (batch 512); docs/benchmarks.md, Performance and GPU. Inference (validation,
# test) runs about 3 times faster than training; D4 averaging costs 8 forward passes an image.
MEASURED_RATES = {
    "cpu-bf16": ("a 2-core CPU with native bf16 (AVX512-BF16)", 56.8),
    "cpu-fp32": ("a 2-core CPU in fp32", 34.2),
    "gpu": ("one NVIDIA H200", 23_150.0),
}


def machine_kind() -> str:
    """Which of ``MEASURED_RATES`` this machine is closest to."""
    import torch

    from lensing.core.runtime import cpu_has_native_bf16

    if torch.cuda.is_available():
        return "gpu"
    return "cpu-bf16" if cpu_has_native_bf16() else "cpu-fp32"


def expected_seconds(per_class: dict[str, int], epochs: int, rate: float) -> float:
    """Training and evaluation time of ``epochs`` epochs over ``per_class`` images per class of
    each split (train, val, test with D4 averaging) at ``rate`` training images/s."""
    n = {split: count * len(CLASSES) for split, count in per_class.items()}
    seconds = epochs * (n.get("train", 0) + n.get("val", 0) / 3) / rate
    return seconds + 8 * n.get("test", 0) / (3 * rate)


def describe_plan(budget: str, kind: str, per_class: dict[str, int], data: str) -> str:
    """What the main job will do and how long it should take, from the measured rates."""
    parameters = BUDGETS[budget]["parameters"]
    grid = parameters["grid"]
    combos = grid_size(grid if grid is not None else DEFAULT_GRID)
    epochs = combos * parameters["epochs_per_combination"] + parameters["additional_epochs"]
    counts = " / ".join(f"{per_class.get(s, 0):,}" for s in SPLITS)
    seen = epochs * per_class["train"] * len(CLASSES)
    lines = [
        f"Plan ({budget} budget): {data} data, {counts} images per class "
        f"(train / val / test); {combos} combination(s) x "
        f"{parameters['epochs_per_combination']} epochs"
        + (f" + {parameters['additional_epochs']} more" if parameters["additional_epochs"] else "")
        + f": {seen:,} training images seen; test with D4 averaging.",
    ]
    for key, (machine, rate) in MEASURED_RATES.items():
        seconds = expected_seconds(per_class, epochs, rate)
        mark = "  <- this machine's kind" if key == kind else ""
        lines.append(f"  expected on {machine}: about {_duration(seconds)}{mark}")
    return "\n".join(lines)


def real_counts(test_fraction: float = 0.1) -> dict[str, int]:
    """Images per class of the real set's splits, from its first class's folders: train less
    the held-out test share, val, and that test share."""
    real = constants.REAL_DATA_DIR
    listed = {s: len(list((real / s / CLASSES[0]).glob("*"))) for s in ("train", "val")}
    test = int(round(test_fraction * listed["train"]))
    return {"train": listed["train"] - test, "val": listed["val"], "test": test}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# The notebook ships with the code: LENSING_ROOT moves the outputs, not it (constants.NOTEBOOK
# lies under LENSING_ROOT, where there is no notebook when the root is moved).
SOURCE_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK.name


def run_notebook(
    parameters: dict, notebook: Path = SOURCE_NOTEBOOK, out_dir: Path = REPORTS_DIR
) -> Path:
    """Execute ``notebook`` with papermill; the executed copy goes to ``out_dir``."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    _stream_cell_output()
    # The kernel inherits this: its bars would be saved as stale lines, its log lines are kept.
    os.environ[NO_BARS_ENV] = "1"
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        cwd=str(notebook.parent),
        progress_bar=False,
        log_output=True,
    )
    return output


def main_job(budget: str = "quick", seed: int = 0) -> Path:
    """Choose the data, run the notebook headless with the budget's parameters, say where the
    reports are; returns the executed notebook's path."""
    sizes = BUDGETS[budget]
    start = time.perf_counter()
    data_dir = choose_data(sizes["simulate"], seed=seed)
    real = data_dir == constants.REAL_DATA_DIR
    subset = sizes["real_subset"] if real else None
    per_class = (subset or real_counts()) if real else sizes["simulate"]
    label = "REAL" + (" (a stratified subset)" if subset else "") if real else "SIMULATED"
    print(describe_plan(budget, machine_kind(), per_class, label), flush=True)
    parameters = {
        **sizes["parameters"],
        "images_per_class": subset,
        "data_dir": str(data_dir),
        "models_dir": str(MODELS_DIR),
        "reports_dir": str(REPORTS_DIR),
        "perform_grid_search": True,
        "seed": seed,
    }
    output = run_notebook(parameters)
    minutes = (time.perf_counter() - start) / 60
    print(
        f"Done in {minutes:.1f} min: {output}, {REPORTS_DIR / 'metrics.json'}, figures in "
        f"{REPORTS_DIR / 'figures'}"
    )
    print(final_verdict(REPORTS_DIR / "metrics.json"))
    return output


def final_verdict(metrics_json: Path) -> str:
    """The last word of the main job: whether its model has learned the classes (the test
    metrics the notebook wrote), so a run that ends at chance does not pass unnoticed."""
    from lensing.evaluation.verdict import verdict

    try:
        metrics = json.loads(metrics_json.read_text())
    except (OSError, ValueError) as error:
        return f"No verdict: {metrics_json} could not be read ({error}); expected test metrics."
    return f"On the {metrics.get('split', 'test')} split: {verdict(metrics)}"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing run``."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing run",
        description="The main job: the data (real, or simulated when absent), the notebook "
        "headless, the reports.",
    )
    parser.add_argument(
        "--budget",
        "--profile",  # its earlier name, still accepted
        dest="budget",
        choices=sorted(BUDGETS),
        default="quick",
        help="quick: a few minutes on a laptop CPU; full: a longer search on a larger set "
        "(%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for simulation and training")
    return parser


def handle(args: argparse.Namespace) -> int:
    """Run the main job with the parsed options; returns the exit code."""
    main_job(args.budget, args.seed)
    return EXIT_OK


def _stream_cell_output() -> None:
    """Print what the notebook's cells print (papermill logs it at INFO level) as it comes, so a
    headless run shows each search trial and epoch in the terminal."""
    logger = logging.getLogger("papermill")
    if not any(getattr(h, "_lensing", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._lensing = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
