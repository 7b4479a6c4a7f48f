"""``python -m lensing simulate``: write a simulated set, or check how real one looks.

``python -m lensing simulate --out DIR --train N --val N [--test N] [--preset NAME] ...``
writes a set (see :mod:`lensing.simulate.writer`); ``python -m lensing simulate --check DIR
[--check-n N]`` prints the likeness table of DIR's train images beside the real Test I set's
(see :mod:`lensing.simulate.likeness`) and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lensing.cli.options import EXIT_OK, EXIT_USAGE
from lensing.core import constants
from lensing.core.constants import MANIFEST
from lensing.simulate.presets import DEFAULT_PRESET, PRESETS, get_preset


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing simulate``."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing simulate",
        description="Write a simulated lensing set (lenstronomy) in the real data's format, or "
        "--check how a folder's images compare with the real Test I set.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=constants.SIMULATED_DATA_DIR,
        help="output folder (not data/dataset)",
    )
    parser.add_argument("--train", type=int, default=None, help="train images per class (>= 1)")
    parser.add_argument("--val", type=int, default=None, help="val images per class (>= 1)")
    parser.add_argument(
        "--test", type=int, default=0, help="test images per class (0: no test folder)"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: every CPU core)"
    )
    parser.add_argument("--force", action="store_true", help="rewrite files that are there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help=f"look of the images (default {DEFAULT_PRESET}: like the real Test I set; "
        "legacy: lens light and an easy signal)",
    )
    parser.add_argument(
        "--substructure-mass",
        type=float,
        default=None,
        metavar="M_SUN",
        help="test-i only: largest subhalo mass in M_sun, the class signal's strength "
        f"(default {PRESETS['test-i'].substructure_mass:.3g})",
    )
    parser.add_argument(
        "--check",
        type=Path,
        default=None,
        metavar="DIR",
        help="print DIR's likeness to the real Test I set instead of simulating",
    )
    parser.add_argument(
        "--check-n", type=int, default=100, metavar="N", help="train images per class to check"
    )
    return parser


def _check(parser: argparse.ArgumentParser, folder: Path, n: int) -> int:
    from lensing.simulate.likeness import likeness, likeness_table

    try:
        report = likeness(folder, n)
    except ValueError as error:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {error}\n")
    print(likeness_table(report))
    return EXIT_OK


def _preset(parser: argparse.ArgumentParser, args: argparse.Namespace):
    if args.substructure_mass is None:
        return args.preset
    if args.preset != "test-i" or not args.substructure_mass >= 0:
        parser.error(
            f"--substructure-mass {args.substructure_mass} with --preset {args.preset}; "
            "expected a mass >= 0 with --preset test-i"
        )
    return get_preset(args.preset, substructure_mass=args.substructure_mass)


def handle(args: argparse.Namespace) -> int:
    """Simulate (or ``--check``) with the parsed options; returns the exit status. A bad
    input exits 2 through the parser (SystemExit), with the parser's usage line."""
    from lensing.simulate.writer import simulate_dataset

    parser = build_parser()  # for its usage errors
    if args.check is not None:
        return _check(parser, args.check, args.check_n)
    missing = [f"--{name}" for name in ("train", "val") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    preset = _preset(parser, args)
    try:
        manifest = simulate_dataset(
            args.out, counts, args.seed, args.workers, args.force, not args.quiet, preset
        )
    except ValueError as error:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {error}\n")
    run = manifest["_run"]
    total = run["written"] + run["skipped"]
    rate = run["written"] / run["seconds"] if run["seconds"] > 0 else float("nan")
    print(
        f"{args.out}: {total} images ({run['written']} written, {run['skipped']} already there) "
        f"in {run['seconds']:.1f} s, {rate:.1f} images/s with {run['workers']} worker(s); "
        f"simulated data, preset {manifest['preset']!r} (see {args.out / MANIFEST})",
        file=sys.stderr,
    )
    return EXIT_OK
