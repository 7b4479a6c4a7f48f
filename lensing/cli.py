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
    REPORTS_DIR,
    SCHEDULES,
    SPLITS,
)
from lensing.preprocess import STRETCHES
from lensing.train_config import TrainConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Commands whose parser and handler live with their subpackage, as ``cli(argv) -> int``.
DELEGATED = {
    "simulate": ("lensing.simulate", "write a simulated data set in the real data's format"),
    "search": ("lensing.search", "resumable grid search over the per-group learning rates"),
    "dashboard": ("lensing.dashboard", "optuna-dashboard on 127.0.0.1 for the search's study"),
    "predict": ("lensing.predict", "classify new image files (.npy, FITS) into a CSV"),
}


def config_default(name: str) -> Any:
    """TrainConfig's default for field ``name``."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of one training run: data, batch, weights, precision, recipe, seed."""
    add = parser.add_argument
    add("--data", default=config_default("data_dir"), help="data folder (%(default)s)")
    add(
        "--batch-size",
        type=int,
        default=config_default("batch_size"),
        help="images per step and process; under torchrun the global batch is this times the "
        "number of processes (%(default)s)",
    )
    add(
        "--weight-decay",
        type=float,
        default=config_default("weight_decay"),
        help="Adam L2 penalty (%(default)s)",
    )
    add(
        "--pretrained",
        default=config_default("pretrained"),
        help="imagenet, none or PATH to a weights file (%(default)s)",
    )
    add(
        "--precision",
        default=config_default("precision"),
        choices=PRECISIONS,
        help="auto: bf16 on CPUs with native bf16 and on GPUs, else fp32 (%(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=config_default("seed"),
        help="init, order, augmentation (%(default)s)",
    )
    add(
        "--augment",
        default=config_default("augment"),
        choices=AUGMENTATIONS + tuple(AUGMENTATION_ALIASES),
        help="flip-affine: the seed notebook's flip, rotation, shift, zoom ('seed' is its old "
        "name); d4: flips and 90-degree turns (%(default)s)",
    )
    add(
        "--stretch",
        default=config_default("stretch"),
        choices=STRETCHES,
        help="input stretch before the network: none, log or arcsinh (%(default)s)",
    )
    add(
        "--schedule",
        default=config_default("schedule"),
        choices=SCHEDULES,
        help="plateau: ReduceLROnPlateau on the val AUC each epoch; onecycle: per-step warm-up "
        "to each group's lr, then cosine decay (%(default)s)",
    )
    add(
        "--early-stopping",
        type=int,
        default=config_default("early_stopping"),
        metavar="N",
        help="stop after N epochs without a better val AUC; 0 = off (%(default)s)",
    )
    add(
        "--device", default=config_default("device"), help="auto, cpu, cuda[:N], mps (%(default)s)"
    )
    add(
        "--num-workers",
        type=int,
        default=config_default("num_workers"),
        help="DataLoader workers, used only when the data is not in memory (%(default)s)",
    )
    add(
        "--no-progress",
        action="store_true",
        help="no progress bars (the per-epoch log lines are still printed)",
    )


def training_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields ``add_training_options`` set, from parsed arguments."""
    return {
        "data_dir": args.data,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "pretrained": args.pretrained,
        "precision": args.precision,
        "seed": args.seed,
        "augment": args.augment,
        "stretch": args.stretch,
        "schedule": args.schedule,
        "early_stopping": args.early_stopping,
        "device": args.device,
        "num_workers": args.num_workers,
    }


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
            default=config_default(f"lr_{group}"),
            help=f"Adam learning rate of the {group} layers (%(default)s)",
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
        **training_fields(args),
        out_dir=args.out,
        epochs=args.epochs,
        resume=args.resume,
        **{f"lr_{group}": getattr(args, f"lr_{group}") for group in LAYER_GROUPS},
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


def _fail(error: BaseException, code: int) -> int:
    from lensing import distributed

    world = distributed.current()
    where = f"rank {world.rank}: " if world.distributed else ""
    print(f"error: {where}{error}", file=sys.stderr)
    return code
