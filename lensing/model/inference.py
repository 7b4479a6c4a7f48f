"""Class probabilities of a trained model for a split, optionally averaged over the 8 exact
rotations and flips of each image (D4 test-time averaging)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensing.core.constants import CLASSES, RESNET18
from lensing.core.runtime import autocast, pick_device, plain_state_dict, resolve_precision
from lensing.data.augment import d4_views
from lensing.data.batches import ordered_batches
from lensing.data.stretch import apply_stretch
from lensing.model.checkpoint import CheckpointError, first_line, load_checkpoint
from lensing.model.network import build_like


def predict_split(
    model: torch.nn.Module,
    dataset: Any,
    *,
    device: str | torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
    tta: bool = False,
    stretch: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every image of a split, in split order.

    Parameters
    ----------
    model: a classifier returning logits of shape (B, K) for input (B, 1, H, W).
    dataset: a split as ``lensing.data.batches`` describes it (a LensingDataset, a pair
        ``(images (N, 1, H, W), labels (N,))``, or a map-style dataset of (image, label)).
    device: where to run ("auto", "cpu", "cuda", ... or a torch.device); the model is moved
        there.
    batch_size: images per forward pass.
    precision: "fp32", "bf16", "fp16" or "auto" (``lensing.core.runtime.resolve_precision``).
    tta: average the softmax over the 8 rotations and flips of each image (``d4_views``).
    stretch: the input stretch the model was trained with (``lensing.data.stretch``).

    Returns
    -------
    (probs float64 array (N, K), rows sum to 1; labels int64 array (N,)). The model is left in
    the train/eval mode it came in.
    """
    device = pick_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    was_training = model.training
    # Moved outside inference mode: parameters created inside it could not be trained later.
    model.to(device)
    model.eval()
    probs, labels = [], []
    try:
        with torch.inference_mode():
            for images, targets in ordered_batches(dataset, batch_size):
                p = batch_probabilities(model, images, device, precision, tta, stretch)
                probs.append(p.cpu())
                labels.append(torch.as_tensor(targets).long().cpu())
    finally:
        model.train(was_training)
    if not probs:
        raise ValueError("the data set is empty; expected at least one image")
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def batch_probabilities(
    model: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    precision: str,
    tta: bool = False,
    stretch: str = "none",
) -> torch.Tensor:
    """Softmax probabilities (B, K) float64 of one batch (B, 1, H, W), the model in eval mode."""
    images = images.to(device, non_blocking=True)
    images = apply_stretch(images, stretch).to(memory_format=torch.channels_last)
    views = d4_views(images) if tta else [images]
    total = None
    for view in views:
        with autocast(device, precision):
            logits = model(view.contiguous(memory_format=torch.channels_last))
        p = torch.softmax(logits.float(), dim=1)
        total = p if total is None else total + p
    return (total / len(views)).double()


def load_trained_model(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network a checkpoint holds (its config's ``model``: a ResNet18 for checkpoints
    written before there was a choice), with its record (``load_checkpoint``'s dict).

    Raises CheckpointError for an unreadable file and ValueError for a checkpoint of other
    classes than ``CLASSES``.
    """
    state = load_checkpoint(checkpoint)
    classes = tuple(state.get("classes") or CLASSES)
    if classes != tuple(CLASSES):
        raise ValueError(
            f"checkpoint {checkpoint} was trained on classes {list(classes)}; expected "
            f"{list(CLASSES)}"
        )
    backbone = (state.get("config") or {}).get("model", RESNET18)
    weights = plain_state_dict(state["model"])
    model = build_like(weights, len(classes), backbone)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint} does not hold a {backbone} of this package: "
            f"{first_line(error)}",
            checkpoint,
        ) from error
    return model, state
