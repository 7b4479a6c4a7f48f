"""``python -m lensing pretrain``: the package's lensing weights, made reproducibly.

Trains the one-channel ResNet18 on new simulated images of every physics family with a
curriculum on the substructure's strength (:mod:`lensing.training.pretrain`). Writes
``OUT/lensing_resnet18.pth`` (half precision) and ``OUT/pretrain_summary.json``; re-run with
``--resume`` after an interruption.
"""

from __future__ import annotations

import argparse

from lensing.cli.options import EXIT_OK
from lensing.core.constants import PRECISIONS

FAMILIES = ("legacy", "model-a", "test-i")
# Options that set one PretrainConfig field of the same name (dashes for underscores, --out
# for out_dir), with their help; the default shown is the field's.
FIELD_OPTIONS = (
    ("--out", "out_dir", str, "output folder"),
    ("--images", "images", int, "new simulated images in all"),
    ("--chunk-per-class", "chunk_per_class", int, "new images per class in one chunk"),
    ("--replay", "replay", int, "chunks trained on together; each image is seen this often"),
    ("--batch-size", "batch_size", int, "images per optimizer step"),
    ("--lr", "lr", float, "Adam peak learning rate"),
    ("--seed", "seed", int, "corpus and training seed"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N, mps"),
    ("--probe-per-class", "probe_per_class", int, "probe images per class of test-i and model-a"),
    ("--probe-every", "probe_every", int, "chunks between probe scores"),
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing pretrain``."""
    from lensing.training.pretrain_config import PretrainConfig

    default = PretrainConfig.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog="python -m lensing pretrain",
        description="Pretrain ResNet18 on simulated lenses (every family, a curriculum from "
        "strong substructure down to the presets' and below). Writes OUT/lensing_resnet18.pth "
        "and OUT/pretrain_summary.json; a kill loses at most one chunk (--resume).",
    )
    for flag, field, kind, text in FIELD_OPTIONS:
        parser.add_argument(
            flag,
            dest=field,
            type=kind,
            default=default[field].default,
            help=f"{text} (%(default)s)",
        )
    parser.add_argument(
        "--hold-out",
        action="append",
        choices=FAMILIES,
        default=[],
        help="leave a family out of the corpus (repeatable)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=default["precision"].default)
    parser.add_argument(
        "--workers", type=int, default=None, help="simulating processes (default: every CPU core)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/pretrain_checkpoint.pth"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def handle(args: argparse.Namespace) -> int:
    """Pretrain with the parsed options; returns the exit code."""
    from lensing.training.pretrain import pretrain
    from lensing.training.pretrain_config import PretrainConfig

    options = {field: getattr(args, field) for _, field, _, _ in FIELD_OPTIONS}
    options |= {"hold_out": tuple(args.hold_out), "precision": args.precision}
    if args.workers is not None:
        options["workers"] = args.workers
    pretrain(PretrainConfig(**options), resume=args.resume, progress=not args.no_progress)
    return EXIT_OK
