"""Options shared by the commands, and their exit codes.

Exit codes, the same for every command: 0 done; 1 the work failed on something it was given
(an unreadable checkpoint or data file, a broken study); 2 a bad option or input (argparse's
own code for usage errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from lensing.constants import (
    AUGMENTATION_ALIASES,
    AUGMENTATIONS,
    LAYER_GROUPS,
    PRECISIONS,
    SCHEDULES,
    STRETCHES,
)
from lensing.training.config import TrainConfig
from lensing.training.recipes import RECIPES, recipe_fields

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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


def fail(error: BaseException | str, code: int) -> int:
    """Print the error (any password in a URL hidden) and return ``code``.

    Under torchrun the line names the rank; it is read from torchrun's environment, because the
    process group is already gone when an error has left the command.
    """
    # Imported here: it pulls in optuna, which most commands and their errors do without.
    from lensing.search.storage import redact

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    where = f"rank {os.environ.get('RANK', '0')}: " if several else ""
    print(f"error: {where}{redact(str(error))}", file=sys.stderr)
    return code
