"""One training epoch and one validation pass, the two steps ``fit`` repeats."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from lensing.core import distributed
from lensing.core.constants import CLASSES
from lensing.core.metrics import compute_metrics
from lensing.core.progress import bar as progress_bar
from lensing.core.runtime import autocast, unwrap
from lensing.data.augment import augment_batch
from lensing.data.batches import share
from lensing.data.stretch import apply_stretch
from lensing.model.inference import predict_split


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    precision: str = "fp32",
    augment: str = "none",
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    channels_last: bool = True,
    progress: bool = True,
    description: str = "train",
    stretch: str = "none",
) -> dict[str, float]:
    """One pass over ``batches`` (images (B, 1, H, W), labels (B,) on ``device``).

    step_scheduler: a per-step schedule (one-cycle), stepped after every optimizer step.

    Returns {"train_loss": mean cross-entropy per image, "images_per_s": training throughput,
    "images": number of images seen}. In a data-parallel job every rank calls it on its own
    share and all three are of the whole job: the loss averaged over every rank's images, the
    images summed, the rate their sum over the slowest rank's time.
    """
    world = distributed.current()
    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    start = time.perf_counter()
    bar = progress_bar(batches, enabled=progress, desc=description, leave=False, unit="batch")
    for step, (images, labels) in enumerate(bar):
        images = augment_batch(apply_stretch(images, stretch), augment, generator)
        images = images.contiguous(memory_format=memory_format)
        with autocast(device, precision):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        total_loss += loss.detach().double() * len(labels)
        seen += len(labels)
        # Reading the loss forces a device sync, so the bar is refreshed only now and then.
        if hasattr(bar, "set_postfix") and step % 10 == 0:
            elapsed = time.perf_counter() - start
            rate = seen * world.world_size / elapsed  # all ranks move in step
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
    summed_loss = float(total_loss.item())  # waits for the device, so the time is complete
    elapsed = time.perf_counter() - start
    if world.distributed:
        sums = torch.tensor([summed_loss, float(seen)], dtype=torch.float64)
        summed_loss, seen = (float(v) for v in distributed.all_reduce(sums))
        seen = int(seen)
        elapsed = float(distributed.all_reduce(torch.tensor(elapsed, dtype=torch.float64), "max"))
    if seen == 0:
        raise ValueError("the training split gave no batch; expected at least one image")
    return {"train_loss": summed_loss / seen, "images_per_s": seen / elapsed, "images": seen}


def validate(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 256,
    stretch: str = "none",
) -> dict[str, float]:
    """Validation loss (mean cross-entropy), macro one-vs-rest AUC and accuracy of ``model``.

    The probabilities come from ``lensing.model.inference.predict_split`` for
    the whole split and the
    metrics from ``compute_metrics`` on them, so they are computed once from gathered
    predictions. In a data-parallel job each rank first takes rank 0's BatchNorm statistics
    (so all ranks hold rank 0's model, the one that is saved), predicts its contiguous share
    of the split (``distributed.shard_range``), and the shares are gathered in split order:
    every rank then scores the whole split, with the same result as one process would.
    """
    world = distributed.current()
    plain = unwrap(model)  # DDP's forward would synchronize buffers
    if not world.distributed:
        probs, labels = predict_split(
            plain,
            dataset,
            device=device,
            batch_size=batch_size,
            precision=precision,
            stretch=stretch,
        )
    else:
        distributed.broadcast_buffers(plain)
        start, stop = distributed.shard_range(len(dataset), world.rank, world.world_size)
        share_probs = torch.zeros((0, len(CLASSES)), dtype=torch.float64)
        share_labels = torch.zeros(0, dtype=torch.int64)
        if stop > start:
            p, y = predict_split(
                plain,
                share(dataset, start, stop),
                device=device,
                batch_size=batch_size,
                precision=precision,
                stretch=stretch,
            )
            share_probs, share_labels = torch.from_numpy(p), torch.from_numpy(y)
        probs = distributed.gather_rows(share_probs).numpy()
        labels = distributed.gather_rows(share_labels).numpy()
        if len(labels) != len(dataset):
            raise RuntimeError(
                f"gathered {len(labels)} validation predictions; expected {len(dataset)}"
            )
    metrics = compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=0)
    picked = probs[np.arange(len(labels)), labels]
    val_loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    return {
        "val_loss": val_loss,
        "val_auc": metrics["auc_macro"],
        "val_accuracy": metrics["accuracy"],
    }
