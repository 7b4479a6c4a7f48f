"""``python -m lensing search``: the resumable grid search over the per-group learning rates.

Exit codes (``lensing.cli.options``): 0 done, 1 the search storage failed (its finished
combinations are kept), 2 a bad option, grid or data, 130 interrupted (Ctrl-C). Under
torchrun, rank 0 searches and every rank trains each combination (``lensing.search.ranks``).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from lensing.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_training_options,
    config_default,
    fail,
    training_fields,
)
from lensing.core.constants import MODELS_DIR, PRUNE_MODES


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing search``."""
    from lensing.search import DEFAULT_EPOCHS, DEFAULT_GRID, DEFAULT_STUDY
    from lensing.search.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S

    parser = argparse.ArgumentParser(
        prog="python -m lensing search",
        description="Resumable grid search over the per-group learning rates. Re-run the same "
        "command to resume; start it on several machines with one --storage to share the grid.",
    )
    add_training_options(parser)
    add = parser.add_argument
    add("--out", type=Path, default=MODELS_DIR, help="models folder (%(default)s)")
    add("--epochs", type=int, default=DEFAULT_EPOCHS, help="per combination (%(default)s)")
    add("--grid", type=Path, help="grid JSON file; default " + json.dumps(DEFAULT_GRID))
    add(
        "--storage",
        help="SQLAlchemy URL (default sqlite:///<out>/grid_search.db; "
        "postgresql://user:pass@host:port/db to share between machines)",
    )
    add("--study", default=DEFAULT_STUDY, help="study name (%(default)s)")
    add("--prune", choices=PRUNE_MODES, default="none", help="stop lagging ones (%(default)s)")
    add("--n-trials", type=int, help="this worker stops after N combinations")
    add("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL_S, help="s (%(default)s)")
    add(
        "--grace-period",
        type=int,
        default=GRACE_PERIOD_S,
        help="seconds without a heartbeat before a trial is retried (%(default)s)",
    )
    add("--quiet", action="store_true", help="no search lines and no progress bars")
    return parser


def handle(args: argparse.Namespace) -> int:
    """Search with the parsed options; ``args.argv`` (the options as typed) makes the hint a
    Ctrl-C prints. Returns the exit code (module docstring)."""
    from lensing.core import distributed
    from lensing.search.ranks import follow, share_config
    from lensing.search.storage import redact

    # The grid sets the learning rates; a recipe's own rates do not apply to a search.
    fields = training_fields(args, with_rates=False)
    data_dir = fields.pop("data_dir", None) or config_default("data_dir")
    # The command as typed, password hidden, is what the Ctrl-C message says to run again.
    command = redact("python -m lensing search " + shlex.join(args.argv))
    with distributed.process_group(fields.get("device", "auto")) as world:
        if not world.is_main:  # under torchrun: train what rank 0 takes from the study
            follow(data_dir, fields.get("in_memory", True))
            return EXIT_OK
        try:
            return _search_as_main(args, data_dir, fields, command)
        finally:
            share_config(None)


def _search_as_main(
    args: argparse.Namespace, data_dir: Any, fields: dict[str, Any], command: str
) -> int:
    from lensing.search import format_table, run_search
    from lensing.search.storage import STORAGE_ERRORS, redact

    try:
        table = run_search(
            data_dir,
            out_dir=args.out,
            epochs=args.epochs,
            grid=args.grid,
            storage=args.storage,
            study_name=args.study,
            base_config=fields,
            prune=args.prune,
            n_trials=args.n_trials,
            progress=not args.no_progress,
            quiet=args.quiet,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            resume_hint=command,
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ConnectionError, *STORAGE_ERRORS) as err:
        first = redact(str(err)).splitlines()[0]
        return fail(
            f"the search storage failed ({type(err).__name__}: {first}); its finished "
            "combinations are kept: re-run the same command to resume",
            EXIT_FAILED,
        )
    shown = ["key"] + ([] if args.prune != "none" else ["epochs_saved"])
    print(format_table(table.drop(columns=shown)))
    return EXIT_OK
