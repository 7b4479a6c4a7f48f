"""``python -m lensing evaluate``: test AUC, ROC curves and confusion matrix of a checkpoint.

It writes ``metrics.json``, ``calibration.json`` (the temperature fitted on the validation
split, with the SHA-256 of the checkpoint it belongs to, for ``predict``) and ``figures/``
into ``--out``; the checkpoint is only read. The work (``lensing.evaluation.evaluate``) is
imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lensing.cli.options import EXIT_OK
from lensing.core.constants import MODELS_DIR, PRECISIONS, REPORTS_DIR, SPLITS


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m lensing evaluate",
        description="Test AUC (with a bootstrap 95%% interval), accuracy, ROC curves and "
        "confusion matrix of a saved model. The checkpoint is only read: the temperature "
        "fitted on the validation split goes to calibration.json in --out, where `python -m "
        "lensing predict` finds it.",
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
        "--out",
        type=Path,
        default=REPORTS_DIR,
        help="metrics.json, calibration.json and figures/ go here (%(default)s)",
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


def handle(args: argparse.Namespace) -> int:
    """Evaluate with the parsed options, print the metrics; returns the exit code."""
    from lensing.evaluation.evaluate import (
        CALIBRATION_JSON,
        METRICS_JSON,
        evaluate_checkpoint,
        format_markdown,
    )

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
    out = Path(args.out)
    print(
        f"\nwrote {out / METRICS_JSON}, {out / CALIBRATION_JSON} (temperature "
        f"{metrics['calibration']['temperature']:.4g}) and {out / 'figures'}/"
    )
    return EXIT_OK
