"""Evaluating a saved model on one split: checkpoint -> probabilities -> metrics -> files.

``python -m lensing evaluate --data DIR --checkpoint FILE [--split test] [--out reports] [--tta]
[--no-explain]`` writes ``<out>/metrics.json``, ``<out>/calibration.json`` and
``<out>/figures/``: ROC curves, confusion matrix, training history, the reliability diagram
before and after temperature scaling, the most confident mistakes and (unless --no-explain)
class-activation maps; it prints a markdown table of the numbers. ``metrics.json`` also says
how many images of the split lie outside the training data (``out_of_distribution``,
:mod:`lensing.data.ood`).

The checkpoint is only read, never written: the temperature fitted on the validation split goes
to ``<out>/calibration.json`` with the SHA-256 of the checkpoint file it belongs to
(:func:`lensing.evaluation.calibration.write_calibration`), where ``predict`` finds it
(:mod:`lensing.evaluation.predict`). So a colleague's model or a read-only file can be
evaluated and stays byte for byte as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from lensing.core.atomic import atomic_write_json
from lensing.core.constants import CLASSES, REPORTS_DIR
from lensing.core.metrics import compute_metrics
from lensing.core.runtime import pick_device, resolve_precision
from lensing.data import ood
from lensing.data.dataset import LensingDataset, provenance
from lensing.data.stretch import stretch_of
from lensing.evaluation.calibration import (
    CALIBRATION_JSON,
    checkpoint_sha256,
    fit_temperature,
    logits_from_probs,
    stored_temperature,
    write_calibration,
)
from lensing.evaluation.figures.explain import write_explanations
from lensing.evaluation.figures.plots import plot_confusion, plot_history, plot_roc
from lensing.evaluation.verdict import verdict
from lensing.model.inference import load_trained_model, predict_split

METRICS_JSON = "metrics.json"
CALIBRATION_KEYS = ("ece", "ece_calibrated", "temperature")


def evaluate_checkpoint(
    data_dir: str | Path,
    checkpoint: str | Path,
    split: str = "test",
    out_dir: str | Path = REPORTS_DIR,
    tta: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
    n_bootstrap: int = 1000,
    explain: bool = True,
    per_class: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model on one split and write its metrics and figures.

    Parameters
    ----------
    data_dir: data set root (``train/``, ``val/``, optionally ``test/``).
    checkpoint: a ``best_model.pth`` or rolling ``checkpoint.pth`` (its ``model``: weights).
    split: "train", "val" or "test".
    out_dir: where ``metrics.json``, ``calibration.json`` and ``figures/`` go.
    tta: average predictions over the 8 rotations and flips.
    batch_size, device, precision: see ``lensing.model.inference.predict``.
    n_bootstrap: resamples for the macro AUC's 95% interval.
    explain: also draw the class-activation maps (``figures/saliency.png``).
    per_class: images per class of each split to use ({"test": 150, "val": 100}: a stratified
        subset, as ``lensing.data.dataset.load_splits`` draws it); None: every image.

    Returns
    -------
    The metrics dict of ``compute_metrics`` plus ``data`` (the data's provenance),
    ``pretrained`` (bool, or None when the checkpoint does not say), ``weights`` (see
    ``weights_of``), ``split``, ``n_images``, ``checkpoint`` (path), ``tta``, ``precision``,
    ``calibration`` ({ece, ece_calibrated, temperature}: the expected calibration error before
    and after scaling by the temperature fitted on the validation split, which
    ``record_calibration`` also writes to ``<out_dir>/calibration.json`` for ``predict``) and
    ``out_of_distribution`` (the split's images outside the training data; see
    ``out_of_distribution``). The checkpoint is only read, never written.
    """
    out_dir = Path(out_dir)
    sha256 = checkpoint_sha256(checkpoint)  # of the bytes the model is loaded from
    model, state = load_trained_model(checkpoint)
    torch_device = pick_device(device)
    options = {
        "device": torch_device,
        "batch_size": batch_size,
        "precision": resolve_precision(precision, torch_device),
        "tta": tta,
        "stretch": stretch_of(state),
    }
    sizes = per_class or {}
    dataset = LensingDataset(data_dir, split, per_class=sizes.get(split))
    probs, labels = predict_split(model, dataset, **options)
    metrics = compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=n_bootstrap)
    metrics.update(
        data=provenance(data_dir),
        pretrained=was_pretrained(state),
        weights=weights_of(state),
        split=split,
        n_images=int(len(labels)),
        checkpoint=str(checkpoint),
        tta=bool(tta),
        precision=options["precision"],
        out_of_distribution=out_of_distribution(state, dataset),
        subset_per_class=sizes.get(split),
    )
    load_val = partial(LensingDataset, data_dir, "val", per_class=sizes.get("val"))
    fitted = validation_temperature(model, state, load_val, options)
    figures = out_dir / "figures"
    explained = (model, dataset, labels, probs, figures)
    summary = write_explanations(
        *explained, temperature=fitted["temperature"], saliency=explain, stretch=options["stretch"]
    )
    metrics["calibration"] = {key: summary[key] for key in CALIBRATION_KEYS}
    record_calibration(out_dir / CALIBRATION_JSON, fitted, metrics, sha256)
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    _plot_results(metrics, labels, probs, state, figures)
    return metrics


def _plot_results(metrics: dict, labels, probs, state: dict[str, Any], figures: Path) -> None:
    """ROC curves, the confusion matrix and, when the checkpoint has one, the history."""
    plot_roc(labels, probs, figures / "roc.png", classes=CLASSES)
    plot_confusion(metrics["confusion_matrix"], figures / "confusion_matrix.png", classes=CLASSES)
    if state.get("history"):
        plot_history(state["history"], figures / "training_history.png")


def validation_temperature(
    model: torch.nn.Module,
    state: dict[str, Any],
    load_val: Callable[[], Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The softmax temperature fitted on the validation split (never the test split), and what
    it was fitted on: {"temperature", "source", "split", "n_images"}, with the TTA of
    ``options["tta"]``.

    load_val: returns the validation split; called only when no stored temperature fits.
    A temperature that an older version of evaluate stored inside the checkpoint
    (``temperature``, with the ``temperature_tta`` it was fitted with) is reused when fitted
    the same way: source "checkpoint", n_images None (not recorded). Otherwise it is fitted
    here: source "fitted". Nothing is written; ``record_calibration`` writes it down.
    """
    tta = bool(options["tta"])
    stored = stored_temperature(state)
    if stored is not None and state.get("temperature_tta") == tta:
        return {"temperature": stored, "source": "checkpoint", "split": "val", "n_images": None}
    probs, labels = predict_split(model, load_val(), **options)
    temperature = fit_temperature(logits_from_probs(probs), labels)
    return {"temperature": temperature, "source": "fitted", "split": "val", "n_images": len(probs)}


def record_calibration(
    path: Path, fitted: dict[str, Any], metrics: dict[str, Any], sha256: str
) -> Path:
    """Write the calibration file ``path`` (``calibration.json``) atomically: the temperature
    and what it was fitted on (``fitted``, from ``validation_temperature``), the evaluated
    checkpoint (``checkpoint``, its SHA-256 ``checkpoint_sha256``: ``predict`` uses the
    temperature only for a file with these very bytes), and the ECE before and after scaling
    on the evaluated split (``ece``, ``ece_calibrated``, ``ece_split``, ``ece_n_images``)."""
    calibration = metrics["calibration"]
    return write_calibration(
        path,
        fitted["temperature"],
        checkpoint=metrics["checkpoint"],
        checkpoint_sha256=sha256,
        source=fitted["source"],
        split=fitted["split"],
        n_images=fitted["n_images"],
        tta=metrics["tta"],
        ece=calibration["ece"],
        ece_calibrated=calibration["ece_calibrated"],
        ece_split=metrics["split"],
        ece_n_images=metrics["n_images"],
    )


def out_of_distribution(state: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """How many images of ``dataset`` lie outside the training data the checkpoint's profile
    describes: {"flagged": int, or None when the checkpoint holds no profile, "n": images,
    "rate": flagged / n or None, "statistics": {statistic label: images flagged on it},
    "summary": one line (``lensing.data.ood.summary_line``)}."""
    summary = ood.summarize(ood.check_inputs(ood.profile_of(state), dataset))
    flagged, n = summary["flagged"], summary["n"]
    rate = None if flagged is None or n == 0 else flagged / n
    return summary | {"rate": rate, "summary": ood.summary_line(summary)}


def weights_of(state: dict[str, Any]) -> str | None:
    """The weights a checkpoint's training started from ("imagenet", "lensing:<hash>",
    "none" or a path); None when the checkpoint does not say."""
    value = state.get("weights")
    if isinstance(value, str):
        return value
    return "none" if was_pretrained(state) is False else None


def was_pretrained(state: dict[str, Any]) -> bool | None:
    """Whether a checkpoint's model started from pretrained weights; None when it cannot say."""
    value = state.get("pretrained")
    if isinstance(value, bool):
        return value
    config = state.get("config") or {}
    if isinstance(config, dict) and config.get("pretrained") == "none":
        return False
    # A config that asked for weights may have fallen back to random init; only the
    # checkpoint's own flag can say, and it is absent.
    return None


def format_markdown(metrics: dict[str, Any]) -> str:
    """The metrics as two markdown tables (AUCs and accuracy, then the confusion matrix) and
    the verdict: whether the model has learned the classes."""
    classes = metrics.get("classes") or list(CLASSES)
    ci = metrics.get("auc_macro_ci95")
    macro = f"{metrics['auc_macro']:.4f}"
    if ci:
        macro += f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
    lines = [
        f"{metrics.get('split', '?')} split, {metrics.get('n_images', '?')} images, "
        f"{metrics.get('data', '?')} data, started from weights "
        f"{metrics.get('weights') or 'unknown'}" + (", TTA" if metrics.get("tta") else ""),
        "",
        "| metric | value |",
        "|---|---|",
        f"| AUC macro | {macro} |",
    ]
    lines += [f"| AUC {name} | {auc:.4f} |" for name, auc in metrics["auc_per_class"].items()]
    lines += [f"| accuracy | {metrics['accuracy']:.4f} |"]
    calibration = metrics.get("calibration")
    if calibration:
        lines.append(
            f"| ECE (15 bins) | {calibration['ece']:.4f}, after temperature "
            f"{calibration['temperature']:.2f}: {calibration['ece_calibrated']:.4f} |"
        )
    outside = metrics.get("out_of_distribution")
    if outside and outside.get("flagged") is not None:
        lines.append(
            f"| outside the training data | {outside['flagged']} of {outside['n']} "
            f"({outside['rate']:.1%}) |"
        )
    elif outside:
        lines.append("| outside the training data | not checked (no training profile) |")
    lines.append("")
    lines += [
        "| true \\ predicted | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", verdict(metrics)]
    return "\n".join(lines)
