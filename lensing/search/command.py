"""``python -m lensing search``: the grid search from the command line.

Re-run the same command to resume; start it on several machines with one ``--storage`` to
share the grid. ``--no-progress`` hides the progress bars (the per-trial and per-epoch lines are
printed always); ``--quiet`` also hides the search's own lines.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from lensing.config import (
    AUGMENTATIONS,
    MODELS_DIR,
    PRECISIONS,
    PRUNE_MODES,
    SCHEDULES,
    default_data_dir,
)
from lensing.search.grid import DEFAULT_GRID
from lensing.search.queueing import SearchError
from lensing.search.runner import DEFAULT_EPOCHS, run_search
from lensing.search.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, STORAGE_ERRORS, redact
from lensing.search.study import DEFAULT_STUDY, format_table

TRAINING_OPTIONS = ("batch_size", "pretrained", "precision", "seed", "augment", "schedule")


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing search``."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing search",
        description="Resumable grid search over the per-group learning rates. Re-run the same "
        "command to resume; start it on several machines with one --storage to share the grid.",
    )
    add_training_options(parser)
    add_search_options(parser)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """What every combination trains on and with (TrainConfig defaults where not given)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
        help="data folder with train/ and val/ (%(default)s)",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="models folder (%(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs per combination (%(default)s)"
    )
    parser.add_argument("--batch-size", type=int, help="images per batch (TrainConfig default)")
    parser.add_argument("--pretrained", help="imagenet, none or a weights file")
    parser.add_argument("--precision", choices=PRECISIONS, help="(TrainConfig default)")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--augment",
        choices=(*AUGMENTATIONS, "seed"),
        help="(TrainConfig default; seed is the old name of flip-affine)",
    )
    parser.add_argument("--schedule", choices=SCHEDULES, help="lr schedule (TrainConfig default)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (log lines stay)"
    )


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The grid, where the study lives, and how workers share it."""
    parser.add_argument(
        "--grid", type=Path, help="grid JSON file; default " + json.dumps(DEFAULT_GRID)
    )
    parser.add_argument(
        "--storage",
        help="SQLAlchemy URL (default sqlite:///<out>/grid_search.db;"
        " postgresql://user:pass@host/db to share between machines)",
    )
    parser.add_argument("--study", default=DEFAULT_STUDY, help="study name (%(default)s)")
    parser.add_argument(
        "--prune",
        choices=PRUNE_MODES,
        default="none",
        help="stop lagging combinations early (%(default)s: full grid)",
    )
    parser.add_argument("--n-trials", type=int, help="this worker stops after N combinations")
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=HEARTBEAT_INTERVAL_S,
        help="seconds between heartbeats (%(default)s)",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=GRACE_PERIOD_S,
        help="seconds without a heartbeat before a trial is retried (%(default)s)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no search lines and no progress bars"
    )


def cli(argv: list[str] | None = None) -> int:
    """Run ``python -m lensing search ARGV``; returns the exit status (2: bad arguments or a
    study that cannot go on as asked; 1: the search storage failed; 130: Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    options = {name: getattr(args, name) for name in TRAINING_OPTIONS}
    base_config = {key: value for key, value in options.items() if value is not None}
    # The command as typed, password hidden, is what the Ctrl-C message says to run again.
    command = redact("python -m lensing search " + shlex.join(argv))
    try:
        table = run_search(
            args.data,
            out_dir=args.out,
            epochs=args.epochs,
            grid=args.grid,
            storage=args.storage,
            study_name=args.study,
            base_config=base_config,
            prune=args.prune,
            n_trials=args.n_trials,
            progress=not args.no_progress,
            quiet=args.quiet,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            resume_hint=command,
        )
    except KeyboardInterrupt:
        return 130
    except (SearchError, ValueError, FileNotFoundError) as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except (ConnectionError, *STORAGE_ERRORS) as err:
        print(
            f"error: the search storage failed ({type(err).__name__}: "
            f"{redact(str(err)).splitlines()[0]}); its finished combinations are kept: re-run "
            "the same command to resume",
            file=sys.stderr,
        )
        return 1
    shown = ["key"] + ([] if args.prune != "none" else ["epochs_saved"])
    print(format_table(table.drop(columns=shown)))
    return 0
