"""The seed pipeline: how the typical DeepLense notebook trains, re-created as the baseline.

Everything a first notebook does, on purpose: a ``Dataset`` that ``np.load``s one file per
image, copies the single channel into three (the model is torchvision's RGB ResNet18),
resizes 150x150 to ImageNet's 224x224, normalizes with ImageNet's mean and std, and applies
torchvision's per-image random transforms (flip, rotation, shift and zoom) in ``num_workers``
DataLoader processes; fp32, the default NCHW layout, ``Adam(model.parameters())`` with one
learning rate, no test-time augmentation. The benchmarks compare this with the package's
pipeline (``lensing.training.fit``) on the same images.

The pipeline uses only torch, torchvision and numpy, as in the notebook. From ``lensing`` it
takes what is no part of the pipeline measured: the class names, the seeding
(``seed_everything``) and the validation score (``compute_metrics``, the package's own macro
AUC, so both sides pick their best epoch by the same figure).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.models import resnet18

from lensing.core.constants import CLASSES
from lensing.core.metrics import compute_metrics
from lensing.core.rng import seed_everything

INPUT_SIZE = 224  # pixels per side: the ImageNet input size the notebook resizes to
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEARNING_RATE = 1e-3  # one Adam learning rate for every layer (torch's default)
BATCH_SIZE = 32  # the notebook's batch size
NUM_WORKERS = 2  # DataLoader processes, a laptop's usual setting


def seed_transforms(train: bool) -> transforms.Compose:
    """The per-image transforms of a (3, 150, 150) float tensor, as the notebook writes them.

    train: add RandomHorizontalFlip, RandomRotation(10) and RandomAffine (shift up to 5 %,
    zoom 0.95-1.05) after the resize; evaluation only resizes and normalizes.
    """
    steps: list[nn.Module] = [transforms.Resize((INPUT_SIZE, INPUT_SIZE), antialias=True)]
    if train:
        steps += [
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(10),
            transforms.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        ]
    steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return transforms.Compose(steps)


class NpyFolderDataset(Dataset):
    """One ``.npy`` file per item, read on every access: ``(float32 (3, 224, 224), label)``.

    files: paths of (1, 150, 150) (or (150, 150)) arrays; labels: their class indices.
    """

    def __init__(
        self, files: Sequence[str | Path], labels: Sequence[int], transform: nn.Module
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"got {len(files)} files but {len(labels)} labels")
        if not files:
            raise ValueError("no files; expected at least one .npy path")
        self.files = [Path(f) for f in files]
        self.labels = [int(y) for y in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.load(self.files[index], allow_pickle=False)).float()
        image = image.reshape(1, *image.shape[-2:]).repeat(3, 1, 1)
        return self.transform(image), self.labels[index]


def seed_loader(
    files: Sequence[str | Path],
    labels: Sequence[int],
    *,
    train: bool,
    batch_size: int = BATCH_SIZE,
    num_workers: int = NUM_WORKERS,
    seed: int = 0,
) -> DataLoader:
    """The notebook's DataLoader: shuffled with random transforms for training, in order
    without them for evaluation."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        NpyFolderDataset(files, labels, seed_transforms(train)),
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        generator=generator,
    )


def build_seed_model(num_classes: int = len(CLASSES)) -> nn.Module:
    """torchvision's ResNet18 (3-channel input, randomly initialized) with a new fc head.

    The notebook loads ImageNet weights; these machines cannot download them, and the package's
    model falls back to random weights too, so both sides start from random weights.
    """
    model = resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def seed_optimizer(model: nn.Module, lr: float = LEARNING_RATE) -> torch.optim.Adam:
    """``Adam(model.parameters(), lr)``: one learning rate, torch's default implementation."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def seed_train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    steps: int | None = None,
) -> dict[str, float]:
    """The notebook's training loop over ``loader`` (at most ``steps`` batches), fp32 on CPU.

    Returns {"train_loss": mean cross-entropy per image, "images": images seen, "seconds":
    wall time including the wait for each batch, "images_per_s"}.
    """
    criterion = nn.CrossEntropyLoss()
    model.train()
    total, seen = 0.0, 0
    start = time.perf_counter()
    for images, labels in itertools.islice(loader, steps):
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        seen += len(labels)
    seconds = time.perf_counter() - start
    if seen == 0:
        raise ValueError("the loader gave no batch; expected at least one image")
    return {
        "train_loss": total / seen,
        "images": seen,
        "seconds": seconds,
        "images_per_s": seen / seconds,
    }


def seed_predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, K) float64 and labels (N,) int64 of an evaluation loader."""
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for images, targets in loader:
            probs.append(torch.softmax(model(images), dim=1).double())
            labels.append(targets)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def seed_fit(
    train: tuple[Sequence[Path], Sequence[int]],
    val: tuple[Sequence[Path], Sequence[int]],
    epochs: int,
    *,
    lr: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    num_workers: int = NUM_WORKERS,
    seed: int = 0,
    log=None,
) -> dict:
    """Train the seed pipeline for ``epochs`` and keep the weights of the best validation AUC.

    train, val: (files, labels). log: called with one line per epoch, or None.
    Returns {"model": the best model (eval mode), "history": per-epoch dicts with train_loss,
    val_auc, seconds and images_per_s, "best_val_auc", "best_epoch", "seconds"}.
    """
    if epochs < 1:
        raise ValueError(f"epochs {epochs!r}; expected >= 1")
    seed_everything(seed)
    model = build_seed_model()
    optimizer = seed_optimizer(model, lr)
    train_loader = seed_loader(
        *train, train=True, batch_size=batch_size, num_workers=num_workers, seed=seed
    )
    val_loader = seed_loader(*val, train=False, batch_size=128, num_workers=num_workers)
    history, best_auc, best_state, best_epoch = [], -1.0, None, 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        trained = seed_train_steps(model, optimizer, train_loader)
        probs, labels = seed_predict(model, val_loader)
        auc = compute_metrics(labels, probs, CLASSES, n_bootstrap=0)["auc_macro"]
        entry = {
            "epoch": epoch,
            "train_loss": trained["train_loss"],
            "val_auc": auc,
            "images_per_s": trained["images_per_s"],
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(entry)
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best_state = copy.deepcopy(model.state_dict())
        if log is not None:
            log(
                f"seed epoch {epoch}/{epochs} loss {entry['train_loss']:.4f} val AUC {auc:.4f} "
                f"{entry['images_per_s']:.1f} img/s"
            )
    model.load_state_dict(best_state)
    model.eval()
    return {
        "model": model,
        "history": history,
        "best_val_auc": best_auc,
        "best_epoch": best_epoch,
        "seconds": time.perf_counter() - start,
    }
