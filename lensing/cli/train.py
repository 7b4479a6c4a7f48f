"""``python -m lensing train``: fine-tune ResNet18 with one learning rate per layer group.

Under torchrun every process runs it (data-parallel). The training options are those of
``lensing.cli.options``; the work is imported only when the command runs.
"""

from __future__ import annotations

import argparse

from lensing.cli.options import EXIT_OK, add_training_options, config_default, training_fields
from lensing.core.constants import LAYER_GROUPS


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing train``."""
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


def handle(args: argparse.Namespace) -> int:
    """Train with the parsed options; returns the exit code."""
    from lensing.core import distributed
    from lensing.training.config import TrainConfig
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
