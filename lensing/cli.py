"""The command line: ``python -m lensing COMMAND [options]``.

Every command's parser is built here; the training options are declared once
(``add_training_options``) and shared by ``train`` and ``search``. A command's work is
imported only when it runs, so ``--help`` stays quick and ``simulate`` does not pay for torch.

Exit codes, the same for every command: 0 done; 1 the work failed on something it was given
(an unreadable checkpoint or data file, a broken study); 2 a bad option or input (argparse's
own code for usage errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lensing.config import (
    AUGMENTATION_ALIASES,
    AUGMENTATIONS,
    LAYER_GROUPS,
    MODELS_DIR,
    PRECISIONS,
    PRUNE_MODES,
    REPORTS_DIR,
    SCHEDULES,
    SPLITS,
)
from lensing.preprocess import STRETCHES
from lensing.recipes import RECIPES, recipe_fields
from lensing.train_config import TrainConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Commands whose parser and handler live with their subpackage, as ``cli(argv) -> int``.
DELEGATED = {
    "simulate": ("lensing.simulate", "write a simulated data set in the real data's format"),
    "dashboard": ("lensing.dashboard", "optuna-dashboard on 127.0.0.1 for the search's study"),
    "predict": ("lensing.predict", "classify new image files (.npy, FITS) into a CSV"),
}


def config_default(name: str) -> Any:
    """TrainConfig's default for field ``name``."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of one training run: data, batch, weights, precision, recipe, seed.

    Every option is None unless given; ``training_fields`` then starts from the recipe and
    TrainConfig's defaults (shown in the help) fill in the rest.
    """

    def add(flag: str, field: str, help: str, **kind: Any) -> None:
        shown = str(config_default(field)).replace("%", "%%")
        parser.add_argument(flag, help=f"{help} ({shown})", **kind)

    add("--data", "data_dir", "data folder")
    parser.add_argument(
        "--recipe",
        default="default",
        choices=sorted(RECIPES),
        help="named set of the options "
        "below; seed-notebook: flip-affine augmentation and plateau schedule (%(default)s)",
    )
    add("--batch-size", "batch_size", "images per step and process", type=int)
    add("--weight-decay", "weight_decay", "Adam L2 penalty", type=float)
    add("--pretrained", "pretrained", "imagenet, none or PATH to a weights file")
    add("--precision", "precision", "auto: bf16 where native, else fp32", choices=PRECISIONS)
    add("--seed", "seed", "init, order, augmentation", type=int)
    add(
        "--augment",
        "augment",
        "flip-affine: the seed notebook's flip, rotation, shift, zoom ('seed' is its old "
        "name); d4: flips and 90-degree turns",
        choices=AUGMENTATIONS + tuple(AUGMENTATION_ALIASES),
    )
    add("--stretch", "stretch", "input stretch: none, log or arcsinh", choices=STRETCHES)
    add(
        "--schedule",
        "schedule",
        "plateau: ReduceLROnPlateau on the val AUC; onecycle: per-step warm-up, cosine decay",
        choices=SCHEDULES,
    )
    add("--early-stopping", "early_stopping", "stop after N epochs without progress", type=int)
    add("--device", "device", "auto, cpu, cuda[:N], mps")
    add("--num-workers", "num_workers", "DataLoader workers when not in memory", type=int)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the per-epoch log lines are still printed)",
    )


TRAINING_FLAGS = {
    "data": "data_dir",
    "batch_size": "batch_size",
    "weight_decay": "weight_decay",
    "pretrained": "pretrained",
    "precision": "precision",
    "seed": "seed",
    "augment": "augment",
    "stretch": "stretch",
    "schedule": "schedule",
    "early_stopping": "early_stopping",
    "device": "device",
    "num_workers": "num_workers",
}


def training_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields of parsed arguments: the recipe's, then every option given."""
    fields = recipe_fields(args.recipe)
    for flag, field in TRAINING_FLAGS.items():
        if getattr(args, flag) is not None:
            fields[field] = getattr(args, flag)
    for group in LAYER_GROUPS:
        if getattr(args, f"lr_{group}", None) is not None:
            fields[f"lr_{group}"] = getattr(args, f"lr_{group}")
    return fields


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
    from lensing import distributed
    from lensing.train import fit

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
    from lensing.evaluate import evaluate_checkpoint, format_markdown

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
    from lensing.run import PROFILES

    parser = argparse.ArgumentParser(
        prog="python -m lensing run",
        description="The main job: the data (real, or simulated when absent), the notebook "
        "headless, the reports.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seed", type=int, default=0, help="seed for simulation and training")
    return parser


def run_main_job(args: argparse.Namespace) -> int:
    from lensing.run import main_job

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
    """``python -m lensing search``: 130 on Ctrl-C, 1 when the search storage fails."""
    from lensing.search import format_table, run_search
    from lensing.search.storage import STORAGE_ERRORS, redact

    # The grid sets the learning rates; a recipe's own rates do not apply to a search.
    fields = {k: v for k, v in training_fields(args).items() if not k.startswith("lr_")}
    data_dir = fields.pop("data_dir", None) or config_default("data_dir")
    # The command as typed, password hidden, is what the Ctrl-C message says to run again.
    command = redact("python -m lensing search " + shlex.join(args.argv))
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
        return _fail(
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


def usage() -> str:
    names = {name: text for name, (text, _, _) in COMMANDS.items()}
    names |= {name: text for name, (_, text) in DELEGATED.items()}
    lines = [f"  {name:<9} {text}" for name, text in sorted(names.items())]
    return "usage: python -m lensing COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name in DELEGATED:
        return int(importlib.import_module(DELEGATED[name][0]).cli(rest) or 0)
    if name not in COMMANDS:
        print(usage())
        print(f"\nunknown command {name!r}; expected one of {', '.join(sorted(COMMANDS))}")
        return EXIT_USAGE
    _, build, handler = COMMANDS[name]
    args = build().parse_args(rest)
    args.argv = rest
    return run_handled(handler, args)


def run_handled(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``handler(args)`` with the exit-code convention applied to the errors it raises."""
    from lensing.checkpoint import CheckpointError

    try:
        return int(handler(args) or 0)
    except CheckpointError as error:
        return _fail(error, EXIT_FAILED)
    except (ValueError, FileNotFoundError) as error:
        return _fail(error, EXIT_USAGE)
    except OSError as error:
        return _fail(error, EXIT_FAILED)


def _fail(error: BaseException | str, code: int) -> int:
    """Print the error (any password in a URL hidden) and return ``code``."""
    from lensing import distributed
    from lensing.search.storage import redact

    world = distributed.current()
    where = f"rank {world.rank}: " if world.distributed else ""
    print(f"error: {where}{redact(str(error))}", file=sys.stderr)
    return code
