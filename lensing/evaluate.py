"""Test metrics of a trained model: macro one-vs-rest AUC with a bootstrap interval, accuracy,
confusion matrix, and the figures that go with them.

``python -m lensing evaluate --data DIR --checkpoint FILE [--split test] [--out reports] [--tta]``
writes ``<out>/metrics.json`` and ``<out>/figures/{roc,confusion_matrix,training_history}.png``
and prints a markdown table of the numbers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from lensing.config import CLASSES, MODELS_DIR, REPORTS_DIR
from lensing.io import atomic_write_json

# Bootstrap resamples are scored in chunks of about this many (resample, item) weights, so
# 1,000 resamples of a large test set never hold more than a few tens of MB at once.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


def compute_metrics(
    labels: Any,
    probs: Any,
    classes: Sequence[str] = CLASSES,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score class probabilities against true labels.

    Parameters
    ----------
    labels: int array-like, shape (N,), values in ``range(len(classes))``; every class must
        occur (a one-vs-rest AUC is undefined for an absent class).
    probs: float array-like, shape (N, len(classes)); column k is the score of class k
        (softmax probabilities; rows need not sum to 1 exactly).
    classes: class names in label order.
    n_bootstrap: number of stratified bootstrap resamples for the 95% interval of the macro
        AUC; 0 skips it (``auc_macro_ci95`` is then None).
    seed: seed of the bootstrap's random generator.

    Returns
    -------
    dict with ``auc_macro`` (float, the mean of the per-class one-vs-rest AUCs, equal to
    ``sklearn.metrics.roc_auc_score(labels, probs, multi_class="ovr", average="macro")``),
    ``auc_per_class`` ({class: float}), ``auc_macro_ci95`` ([low, high] percentile interval or
    None), ``accuracy`` (float, argmax prediction), ``confusion_matrix`` (list of lists of int,
    rows = true class, columns = predicted class, both in ``classes`` order),
    ``classification_report`` (sklearn's ``output_dict``), ``n_bootstrap`` and ``classes``.
    """
    labels, probs = _check_inputs(labels, probs, classes)
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")

    per_class = {
        name: float(roc_auc_score(labels == k, probs[:, k])) for k, name in enumerate(classes)
    }
    auc_macro = float(np.mean(list(per_class.values())))
    ci95 = None
    if n_bootstrap > 0:
        boot = bootstrap_macro_auc(labels, probs, n_bootstrap=int(n_bootstrap), seed=seed)
        ci95 = [float(v) for v in np.percentile(boot, [2.5, 97.5])]

    predicted = probs.argmax(axis=1)
    indices = list(range(len(classes)))
    return {
        "auc_macro": auc_macro,
        "auc_per_class": per_class,
        "auc_macro_ci95": ci95,
        "accuracy": float(np.mean(predicted == labels)),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "classification_report": classification_report(
            labels,
            predicted,
            labels=indices,
            target_names=list(classes),
            output_dict=True,
            zero_division=0,
        ),
        "n_bootstrap": int(n_bootstrap),
        "classes": list(classes),
    }


def _check_inputs(
    labels: Any, probs: Any, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().float().cpu().numpy()
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {list(classes)!r}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}")
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(
            f"probs must have shape (N, {n_classes}) (one column per class of "
            f"{list(classes)}), got {probs.shape}"
        )
    if len(labels) != len(probs):
        raise ValueError(f"got {len(labels)} labels but {len(probs)} rows of probabilities")
    if len(labels) == 0:
        raise ValueError("labels are empty; expected at least one image per class")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)):
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"label {bad!r} out of range; expected 0..{n_classes - 1} ({classes})")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or infinite values")
    counts = np.bincount(labels, minlength=n_classes)
    missing = [name for name, count in zip(classes, counts, strict=True) if count == 0]
    if missing:
        raise ValueError(
            f"no image of class {', '.join(map(repr, missing))} among the labels: its "
            "one-vs-rest AUC is undefined; evaluate on a split that holds every class"
        )
    return labels.astype(np.int64), probs


def bootstrap_macro_auc(
    labels: np.ndarray, probs: np.ndarray, n_bootstrap: int = 1000, seed: int = 0
) -> np.ndarray:
    """Macro one-vs-rest AUC of ``n_bootstrap`` stratified bootstrap resamples.

    Each resample draws, within every class, as many items as the class has, with replacement,
    so every resample holds every class in its original number. A resample is represented by
    its multiplicity weights on the original items, and each AUC is the weighted
    Mann-Whitney statistic (ties count one half) over the items sorted once per class, which
    avoids re-sorting every resample.

    Parameters
    ----------
    labels: int array, shape (N,), every class present.
    probs: float array, shape (N, K).

    Returns
    -------
    float64 array, shape (n_bootstrap,).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    n_items, n_classes = probs.shape
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == k) for k in range(n_classes)]

    # Per class: the sort order of its score column and where runs of equal scores start.
    orders, run_starts, positives = [], [], []
    for k in range(n_classes):
        order = np.argsort(probs[:, k], kind="stable")
        sorted_scores = probs[order, k]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        orders.append(order)
        run_starts.append(starts)
        positives.append(labels[order] == k)
    class_sizes = np.array([len(m) for m in members], dtype=np.float64)

    out = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(n_items, 1))
    for first in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - first)
        weights = np.zeros((size, n_items), dtype=np.float64)
        for idx in members:
            # Stratified: each resample draws len(idx) items of this class with replacement;
            # bincount over (resample, item) turns the draws into multiplicities.
            n = len(idx)
            draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
            weights[:, idx] = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        aucs = np.zeros(size, dtype=np.float64)
        for k in range(n_classes):
            w = weights[:, orders[k]]
            pos = w * positives[k]
            neg = w - pos
            pos_runs = np.add.reduceat(pos, run_starts[k], axis=1)
            neg_runs = np.add.reduceat(neg, run_starts[k], axis=1)
            neg_below = np.cumsum(neg_runs, axis=1) - neg_runs
            wins = np.sum(pos_runs * (neg_below + 0.5 * neg_runs), axis=1)
            n_pos = class_sizes[k]
            aucs += wins / (n_pos * (n_items - n_pos))
        out[first : first + size] = aucs / n_classes
    return out


def predict(
    model: torch.nn.Module,
    dataset: Any,
    *,
    device: str | torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every image of a data set.

    Parameters
    ----------
    model: a classifier returning logits of shape (B, K) for input (B, 1, H, W).
    dataset: a ``LensingDataset`` (its ``.images`` tensor is batched directly when in memory,
        otherwise a DataLoader reads it), any map-style dataset of (image, label) pairs, or a
        pair ``(images FloatTensor (N, 1, H, W), labels LongTensor (N,))``.
    device: where to run ("auto", "cpu", "cuda", ... or a torch.device); the model is moved
        there.
    batch_size: images per forward pass.
    precision: "fp32", "bf16", "fp16" or "auto" (``lensing.model.resolve_precision``).
    tta: average the softmax over the 8 rotations and flips of each image (``d4_views``).

    Returns
    -------
    (probs float64 array (N, K), rows sum to 1; labels int64 array (N,)). The model is left in
    the train/eval mode it came in.
    """
    from lensing.augment import d4_views
    from lensing.model import autocast, pick_device, resolve_precision

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    device = pick_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    was_training = model.training
    # Moved outside inference mode: parameters created inside it could not be trained later.
    model.to(device)
    model.eval()
    probs, labels = [], []
    try:
        with torch.inference_mode():
            for images, targets in _batches(dataset, batch_size):
                images = images.to(device, non_blocking=True).to(memory_format=torch.channels_last)
                views = d4_views(images) if tta else [images]
                total = None
                for view in views:
                    with autocast(device, precision):
                        logits = model(view.contiguous(memory_format=torch.channels_last))
                    p = torch.softmax(logits.float(), dim=1)
                    total = p if total is None else total + p
                probs.append((total / len(views)).double().cpu())
                labels.append(torch.as_tensor(targets).long().cpu())
    finally:
        model.train(was_training)
    if not probs:
        raise ValueError("the data set is empty; expected at least one image")
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def _batches(dataset: Any, batch_size: int):
    """Yield (images (B, 1, H, W), labels (B,)) batches in data set order."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        images, labels = dataset
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        labels = torch.as_tensor(labels)
    elif getattr(dataset, "images", None) is not None:
        images, labels = dataset.images, dataset.labels
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        yield from loader
        return
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


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
) -> dict[str, Any]:
    """Evaluate a saved model on one split and write its metrics and figures.

    Parameters
    ----------
    data_dir: data set root (``train/``, ``val/``, optionally ``test/``).
    checkpoint: a ``best_model.pth`` or rolling ``checkpoint.pth`` (key ``model`` holds the
        state_dict).
    split: "train", "val" or "test".
    out_dir: where ``metrics.json`` and ``figures/`` go.
    tta: average predictions over the 8 rotations and flips.
    batch_size, device, precision: see ``predict``.
    n_bootstrap: resamples for the macro AUC's 95% interval.

    Returns
    -------
    The metrics dict of ``compute_metrics`` plus ``data`` ("simulated" | "real"),
    ``pretrained`` (bool, or None when the checkpoint does not say), ``split``, ``n_images``,
    ``checkpoint`` (path), ``tta``, ``precision``.
    """
    from lensing.data import LensingDataset, data_kind
    from lensing.model import build_model, pick_device, resolve_precision
    from lensing.plots import plot_confusion, plot_history, plot_roc
    from lensing.train import load_checkpoint

    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    state = load_checkpoint(checkpoint)
    classes = tuple(state.get("classes") or CLASSES)
    if classes != tuple(CLASSES):
        raise ValueError(
            f"checkpoint {checkpoint} was trained on classes {list(classes)}; expected "
            f"{list(CLASSES)}"
        )
    model = build_model("none", num_classes=len(classes))
    model.load_state_dict(_plain_state_dict(state["model"]))

    dataset = LensingDataset(data_dir, split)
    torch_device = pick_device(device)
    precision = resolve_precision(precision, torch_device)
    probs, labels = predict(
        model, dataset, device=torch_device, batch_size=batch_size, precision=precision, tta=tta
    )
    metrics = compute_metrics(labels, probs, classes=classes, n_bootstrap=n_bootstrap)
    metrics.update(
        data=data_kind(data_dir),
        pretrained=_was_pretrained(state),
        split=split,
        n_images=int(len(labels)),
        checkpoint=str(checkpoint),
        tta=bool(tta),
        precision=precision,
    )
    atomic_write_json(out_dir / "metrics.json", metrics)

    figures = out_dir / "figures"
    plot_roc(labels, probs, figures / "roc.png", classes=classes)
    plot_confusion(metrics["confusion_matrix"], figures / "confusion_matrix.png", classes=classes)
    if state.get("history"):
        plot_history(state["history"], figures / "training_history.png")
    return metrics


def _plain_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Strip the prefixes that torch.compile ("_orig_mod.") and DDP ("module.") add."""
    plain = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        plain[key] = value
    return plain


def _was_pretrained(state: dict[str, Any]) -> bool | None:
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
    """The metrics as two markdown tables: AUCs and accuracy, then the confusion matrix."""
    classes = metrics.get("classes") or list(CLASSES)
    ci = metrics.get("auc_macro_ci95")
    macro = f"{metrics['auc_macro']:.4f}"
    if ci:
        macro += f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
    lines = [
        f"{metrics.get('split', '?')} split, {metrics.get('n_images', '?')} images, "
        f"{metrics.get('data', '?')} data" + (", TTA" if metrics.get("tta") else ""),
        "",
        "| metric | value |",
        "|---|---|",
        f"| AUC macro | {macro} |",
    ]
    lines += [f"| AUC {name} | {auc:.4f} |" for name, auc in metrics["auc_per_class"].items()]
    lines += [f"| accuracy | {metrics['accuracy']:.4f} |", ""]
    lines += [
        "| true \\ predicted | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument(
        "--out", type=Path, default=REPORTS_DIR, help="metrics.json and figures/ go here"
    )
    parser.add_argument(
        "--tta", action="store_true", help="average over the 8 rotations and flips"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument(
        "--n-bootstrap", type=int, default=1000, help="resamples for the AUC interval (0: none)"
    )
    return parser


def cli(argv: list[str] | None = None) -> int:
    from lensing.data import BadFileError
    from lensing.train import CheckpointError

    args = get_args_parser().parse_args(argv)
    try:
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
        )
    except (CheckpointError, BadFileError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_markdown(metrics))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'figures'}/")
    return 0
