"""``python -m lensing run``, the main job (``make run``): pick the data, execute the notebook
headless, leave the reports.

The real set in ``data/dataset`` is used when it is there; otherwise a small simulated set is
written into ``data/simulated`` (never into ``data/dataset``, which is the real download's) and
the job says so. The notebook then runs under papermill with a profile's parameters, leaving
``reports/classification_notebook.ipynb`` (executed), ``reports/metrics.json`` and
``reports/figures/*.png``. Re-running resumes the search where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from lensing.cli.options import EXIT_OK
from lensing.constants import MODELS_DIR, NOTEBOOK, REPORTS_DIR
from lensing.data.choice import choose_data
from lensing.progress import NO_BARS_ENV
from lensing.training.recipes import recipe_rates

# Profiles. "quick" is sized for a 2-core laptop CPU: one combination, so that its few minutes
# go to a model that learns something (README, Results, for the time it takes with and
# without native bf16). "full" is a longer search on a larger set.
PROFILES = {
    "quick": {
        # The budget the simulator's default strength was calibrated on: 400 images per class
        # for 6 epochs is where a ResNet18 from random weights starts to see the substructure
        # (at 300 for 4 epochs every recipe stays near chance).
        "simulate": {"train": 400, "val": 100, "test": 150},  # images per class
        "parameters": {
            # One combination: the default recipe's rate for each layer group.
            "grid": {group: [rate] for group, rate in recipe_rates("default").items()},
            "epochs_per_combination": 6,
            "additional_epochs": 0,
            "batch_size": 64,
        },
    },
    "full": {
        "simulate": {"train": 1000, "val": 250, "test": 250},
        "parameters": {"grid": None, "epochs_per_combination": 10, "additional_epochs": 5},
    },
}


def run_notebook(parameters: dict, notebook: Path = NOTEBOOK, out_dir: Path = REPORTS_DIR) -> Path:
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


def main_job(profile_name: str = "quick", seed: int = 0) -> Path:
    """Choose the data, run the notebook headless with the profile's parameters, say where the
    reports are; returns the executed notebook's path."""
    profile = PROFILES[profile_name]
    start = time.perf_counter()
    data_dir = choose_data(profile["simulate"], seed=seed)
    parameters = {
        **profile["parameters"],
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
    return output


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing run``."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing run",
        description="The main job: the data (real, or simulated when absent), the notebook "
        "headless, the reports.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seed", type=int, default=0, help="seed for simulation and training")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the main job with the parsed options; returns the exit code."""
    main_job(args.profile, args.seed)
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
