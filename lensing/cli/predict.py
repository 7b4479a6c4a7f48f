"""``python -m lensing predict``: classify image files with a trained model into a CSV.

``python -m lensing predict [--checkpoint models/best_model.pth] INPUT... [--out
predictions.csv] [--calibration FILE] [--tta] [--batch-size N] [--device D] [--precision P]
[--hdu N|NAME] [--resize] [--fill-nonfinite] [--no-progress]``

The work and the CSV's columns: :mod:`lensing.evaluation.predict`. It prints which
temperature calibrates the ``pc_`` columns, or that the probabilities are uncalibrated (the
rule, in the parser's epilog and :mod:`lensing.evaluation.predict`: a ``calibration.json``
written by ``evaluate`` for this very checkpoint file, else a temperature an older
``evaluate`` stored in the checkpoint, else none), how many inputs lie outside the training
data (their ``notes`` say on which statistic, ``in_distribution`` is False;
:mod:`lensing.data.ood`), then a summary of the predictions. Inputs outside the training data
are classified all the same: the flag is a warning, not a refusal.

Exit codes (``lensing.cli.options``): 0 every input got its row (refused files included);
1 the checkpoint or the named calibration file could not be used, no image file was found,
or the CSV could not be written; 2 a bad option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lensing.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lensing.core.constants import MODELS_DIR, PRECISIONS, PREDICT_BATCH, REPORTS_DIR

DEFAULT_CHECKPOINT = MODELS_DIR / "best_model.pth"
DEFAULT_OUT = "predictions.csv"
CALIBRATION_RULE = (
    "Calibrated columns pc_*: softmax(log p / T) with the temperature T that `python -m "
    "lensing evaluate` fitted on the validation split. T comes from --calibration FILE or, "
    "without it, from calibration.json beside the checkpoint, else from "
    f"{REPORTS_DIR / 'calibration.json'}, used only when the file records the SHA-256 of this "
    "very checkpoint file (a file of another checkpoint is ignored, with a message); else from "
    "a temperature stored inside the checkpoint by older versions of evaluate; else the "
    "probabilities are uncalibrated and there are no pc_* columns. The run says which."
)


def _hdu(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _batch_size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}; expected an int >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing predict`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing predict",
        description="Classify image files (.npy, FITS) with a trained model into a CSV.",
        epilog=CALIBRATION_RULE,
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT", help="image files and folders (searched deeply)")
    add("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model (%(default)s)")
    add("--out", type=Path, default=Path(DEFAULT_OUT), help="CSV to write (%(default)s)")
    add(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="calibration.json written by evaluate for this checkpoint (default: beside the "
        "checkpoint, else in reports/; see below)",
    )
    add("--tta", action="store_true", help="average over the 8 rotations and flips")
    add(
        "--batch-size",
        type=_batch_size,
        default=PREDICT_BATCH,
        help="images at once (%(default)s)",
    )
    add("--device", default="auto", help="auto, cpu, cuda[:N] or mps (%(default)s)")
    add(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 on CPUs with native bf16 and on GPUs, else fp32 (%(default)s)",
    )
    add("--hdu", type=_hdu, help="FITS HDU index or EXTNAME (default: first with an image)")
    add("--resize", action="store_true", help="resample images that are not 150x150")
    add(
        "--fill-nonfinite",
        action="store_true",
        help="replace NaN and inf pixels with the finite minimum instead of refusing the file",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def handle(args: argparse.Namespace) -> int:
    """Classify with the parsed options and write the CSV; returns the exit code (module
    docstring)."""
    from lensing.core.runtime import pick_device, resolve_precision
    from lensing.evaluation.predict import (
        calibration_line,
        distribution_line,
        predict_files,
        summary_line,
        write_predictions,
    )
    from lensing.model.checkpoint import CheckpointError

    try:
        device = pick_device(args.device)
        precision = resolve_precision(args.precision, device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        frame = predict_files(
            args.checkpoint,
            args.inputs,
            calibration=args.calibration,
            tta=args.tta,
            batch_size=args.batch_size,
            device=device,
            precision=precision,
            hdu=args.hdu,
            fill_nonfinite=args.fill_nonfinite,
            resize=args.resize,
            progress=not args.no_progress,
        )
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    if frame.empty:
        print(f"error: no image file under {', '.join(args.inputs)}", file=sys.stderr)
        return EXIT_FAILED
    try:
        write_predictions(frame, args.out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(calibration_line(frame))
    print(distribution_line(frame))
    print(f"{summary_line(frame)}; wrote {args.out}")
    return EXIT_OK
