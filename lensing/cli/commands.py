"""The commands' parsers and what each runs: train, evaluate, search, run.

The training options are declared once (``lensing.cli.options.add_training_options``) and shared
by ``train`` and ``search``. The work is imported only when a command runs, so ``--help``
stays quick.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lensing.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_training_options,
    config_default,
    fail,
    training_fields,
)
from lensing.constants import (
    LAYER_GROUPS,
    MODELS_DIR,
    PRECISIONS,
    PRUNE_MODES,
    REPORTS_DIR,
    SPLITS,
)
from lensing.training.config import TrainConfig


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lensing train",
        description="Fine-tune ResNet18 with one learning rate per layer group. Writes "
        "OUT/checkpoint.pth (rolling), OUT/best_model.pth (best val AUC) and OUT/config.json.",
    )
    add_training_options(parser)
    parser.add_argument("--out", default=config_default("out_dir"), help="output (%(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=config_default("epochs"), help="total epochs (%(default)s)"
    )
    for group in LAYER_GROUPS:
        parser.add_argument(
            f"--lr-{group}",
            type=float,
            help=f"Adam learning rate of the {group} layers ({config_default(f'lr_{group}')})",
        )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoint.pth if present"
    )
    return parser


def run_train(args: argparse.Namespace) -> int:
    """``python -m lensing train``; under torchrun every process runs it (data-parallel)."""
    from lensing.training import distributed
    from lensing.training.fit import fit

    config = TrainConfig(
        **training_fields(args), out_dir=args.out, epochs=args.epochs, resume=args.resume
    )
    with distributed.process_group(config.device) as world:
        result = fit(config, progress=not args.no_progress)
    if world.is_main:
        best = result["best_val_auc"]
        print(
            f"best val AUC {best:.4f}" if best is not None else "no epoch trained",
            f"(pretrained={result['pretrained']}); "
            f"best model {result['best_checkpoint']}, checkpoint {result['checkpoint']}",
        )
    return EXIT_OK


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lensing evaluate",
        description="Test AUC (with a bootstrap 95%% interval), accuracy, ROC curves and "
        "confusion matrix of a saved model.",
    )
    parser.add_argument("--data", required=True, type=Path, help="data set root")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=MODELS_DIR / "best_model.pth",
        help="model checkpoint (default: %(default)s)",
    )
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument(
        "--out", type=Path, default=REPORTS_DIR, help="metrics.json and figures/ go here"
    )
    parser.add_argument(
        "--tta", action="store_true", help="average over the 8 rotations and flips"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument(
        "--n-bootstrap", type=int, default=1000, help="resamples for the AUC interval (0: none)"
    )
    parser.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="skip the class-activation maps (saliency.png), for speed",
    )
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    from lensing.evaluation.evaluate import evaluate_checkpoint, format_markdown

    metrics = evaluate_checkpoint(
        args.data,
        args.checkpoint,
        split=args.split,
        out_dir=args.out,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        n_bootstrap=args.n_bootstrap,
        explain=args.explain,
    )
    print(format_markdown(metrics))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'figures'}/")
    return EXIT_OK


def run_parser() -> argparse.ArgumentParser:
    from lensing.cli.run import PROFILES

    parser = argparse.ArgumentParser(
        prog="python -m lensing run",
        description="The main job: the data (real, or simulated when absent), the notebook "
        "headless, the reports.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seed", type=int, default=0, help="seed for simulation and training")
    return parser


def run_main_job(args: argparse.Namespace) -> int:
    from lensing.cli.run import main_job

    main_job(args.profile, args.seed)
    return EXIT_OK


def search_parser() -> argparse.ArgumentParser:
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


def run_search_command(args: argparse.Namespace) -> int:
    """``python -m lensing search``: 130 on Ctrl-C, 1 when the search storage fails. Under
    torchrun, rank 0 searches and every rank trains each combination (``lensing.search.ranks``).
    """
    from lensing.search.ranks import follow, share_config
    from lensing.search.storage import redact
    from lensing.training import distributed

    # The grid sets the learning rates; a recipe's own rates do not apply to a search.
    fields = {k: v for k, v in training_fields(args).items() if not k.startswith("lr_")}
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
        return 130
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


COMMANDS: dict[str, tuple[str, Callable[[], argparse.ArgumentParser], Callable]] = {
    "train": (
        "fine-tune ResNet18 with one learning rate per layer group",
        train_parser,
        run_train,
    ),
    "evaluate": (
        "test AUC, ROC curves and confusion matrix of a checkpoint",
        evaluate_parser,
        run_evaluate,
    ),
    "run": ("the main job: data, notebook headless, reports", run_parser, run_main_job),
    "search": (
        "resumable grid search over the per-group learning rates",
        search_parser,
        run_search_command,
    ),
}
