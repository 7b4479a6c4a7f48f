"""Options shared by the commands, and their exit codes.

Exit codes, the same for every command:

- 0 (``EXIT_OK``): done;
- 1 (``EXIT_FAILED``): the work failed on something it was given (an unreadable checkpoint or
  data file, a broken study, a file that cannot be written);
- 2 (``EXIT_USAGE``): a bad option or input (argparse's own code for usage errors);
- 130 (``EXIT_INTERRUPTED``): stopped by Ctrl-C (128 + SIGINT, as a shell reports it).

A command may add codes of its own above 2 for failures its users tell apart
(``lensing.cli.download``: 3-9); it declares them in its module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, NamedTuple

from lensing.cli.choice import default_data_dir
from lensing.core.constants import (
    AUGMENTATION_ALIASES,
    AUGMENTATIONS,
    LAYER_GROUPS,
    MODELS,
    PRECISIONS,
    REAL_DATA_DIR,
    SCHEDULES,
    STRETCHES,
)
from lensing.training.config import TrainConfig
from lensing.training.recipes import RECIPES, merge_options

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


class TrainingOption(NamedTuple):
    """One training option: its flag, the TrainConfig field it sets, its help, and the rest
    of ``add_argument``'s keywords (type, choices)."""

    flag: str
    field: str
    help: str
    kind: dict[str, Any]


# The options of one training run, shared by ``train`` and ``search``. Every one is None
# unless given; ``training_fields`` then starts from the recipe and TrainConfig's defaults
# (shown in the help) fill in the rest.
TRAINING_OPTIONS: tuple[TrainingOption, ...] = (
    TrainingOption("--data", "data_dir", "data folder", {}),
    TrainingOption(
        "--model",
        "model",
        "resnet18, or d4-resnet (D4 group convolutions: turn- and flip-invariant logits; "
        "random weights only)",
        {"choices": MODELS},
    ),
    TrainingOption("--batch-size", "batch_size", "images per step and process", {"type": int}),
    TrainingOption("--weight-decay", "weight_decay", "Adam L2 penalty", {"type": float}),
    TrainingOption(
        "--pretrained",
        "pretrained",
        "imagenet (else lensing), lensing, none or PATH to a weights file",
        {},
    ),
    TrainingOption(
        "--precision",
        "precision",
        "auto: bf16 where native, else fp32",
        {"choices": PRECISIONS},
    ),
    TrainingOption("--seed", "seed", "init, order, augmentation", {"type": int}),
    TrainingOption(
        "--augment",
        "augment",
        "flip-affine: the seed notebook's flip, rotation, shift, zoom ('seed' is its old "
        "name); d4: flips and 90-degree turns",
        {"choices": AUGMENTATIONS + tuple(AUGMENTATION_ALIASES)},
    ),
    TrainingOption(
        "--stretch",
        "stretch",
        "input stretch: none, log or arcsinh",
        {"choices": STRETCHES},
    ),
    TrainingOption(
        "--schedule",
        "schedule",
        "plateau: ReduceLROnPlateau on the val AUC; onecycle: per-step warm-up, cosine decay",
        {"choices": SCHEDULES},
    ),
    TrainingOption(
        "--warmup",
        "onecycle_warmup",
        "onecycle: share of the steps spent raising the learning rates, in (0, 1)",
        {"type": float},
    ),
    TrainingOption(
        "--early-stopping",
        "early_stopping",
        "stop after N epochs without progress",
        {"type": int},
    ),
    TrainingOption("--device", "device", "auto, cpu, cuda[:N], mps", {}),
    TrainingOption(
        "--compile",
        "compile",
        "torch.compile the model: faster steps on a GPU after a warm-up",
        {"action": "store_const", "const": True},
    ),
    TrainingOption(
        "--num-workers",
        "num_workers",
        "DataLoader workers when not in memory",
        {"type": int},
    ),
)


def dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` under (``--batch-size`` -> ``batch_size``)."""
    return flag.removeprefix("--").replace("-", "_")


# Parsed attribute -> TrainConfig field, derived from the table above.
TRAINING_FLAGS: dict[str, str] = {dest(o.flag): o.field for o in TRAINING_OPTIONS}


def config_default(name: str) -> Any:
    """TrainConfig's default for field ``name``."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--recipe``, the options of ``TRAINING_OPTIONS`` and ``--no-progress``."""
    parser.add_argument(
        "--recipe",
        default="default",
        choices=sorted(RECIPES),
        help="named set of the options "
        "below; seed-notebook: flip-affine augmentation and plateau schedule (%(default)s)",
    )
    for option in TRAINING_OPTIONS:
        shown = str(config_default(option.field)).replace("%", "%%")
        if option.field == "data_dir":
            shown = f"{REAL_DATA_DIR} once downloaded, else {shown}"
        parser.add_argument(option.flag, help=f"{option.help} ({shown})", **option.kind)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the per-epoch log lines are still printed)",
    )


def training_fields(args: argparse.Namespace, *, with_rates: bool = True) -> dict[str, Any]:
    """The TrainConfig fields of parsed arguments: the recipe's, then every option given
    (``lensing.training.recipes.merge_options``); ``with_rates=False`` leaves out the
    learning rates, which a search's grid sets."""
    options = {field: getattr(args, flag) for flag, field in TRAINING_FLAGS.items()}
    if options.get("data_dir") is None:
        options["data_dir"] = str(default_data_dir())
    options |= {f"lr_{g}": getattr(args, f"lr_{g}", None) for g in LAYER_GROUPS}
    return merge_options(args.recipe, options, with_rates=with_rates)


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
