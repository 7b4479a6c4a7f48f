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
    parser.add_argument("--out", default=default["out_dir"].default, help="output (%(default)s)")
    parser.add_argument(
        "--images",
        type=int,
        default=default["images"].default,
        help="new simulated images in all (%(default)s)",
    )
    parser.add_argument(
        "--chunk-per-class",
        type=int,
        default=default["chunk_per_class"].default,
        help="new images per class in one chunk (%(default)s)",
    )
    parser.add_argument(
        "--replay",
        type=int,
        default=default["replay"].default,
        help="chunks trained on together; each image is seen this often (%(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=default["batch_size"].default)
    parser.add_argument(
        "--lr",
        type=float,
        default=default["lr"].default,
        help="Adam peak learning rate (%(default)s)",
    )
    parser.add_argument(
        "--hold-out",
        action="append",
        choices=FAMILIES,
        default=[],
        help="leave a family out of the corpus (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument(
        "--workers", type=int, default=None, help="simulating processes (default: every CPU core)"
    )
    parser.add_argument(
        "--probe-per-class",
        type=int,
        default=default["probe_per_class"].default,
        help="probe images per class of test-i and model-a (%(default)s)",
    )
    parser.add_argument(
        "--probe-every",
        type=int,
        default=default["probe_every"].default,
        help="chunks between probe scores (%(default)s)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/pretrain_checkpoint.pth"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run(args: argparse.Namespace) -> int:
    """Pretrain with the parsed options; returns the exit code."""
    from lensing.training.pretrain import pretrain
    from lensing.training.pretrain_config import PretrainConfig

    options = {
        "out_dir": args.out,
        "images": args.images,
        "chunk_per_class": args.chunk_per_class,
        "replay": args.replay,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hold_out": tuple(args.hold_out),
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "probe_per_class": args.probe_per_class,
        "probe_every": args.probe_every,
    }
    if args.workers is not None:
        options["workers"] = args.workers
    pretrain(PretrainConfig(**options), resume=args.resume, progress=not args.no_progress)
    return EXIT_OK
