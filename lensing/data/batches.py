"""Batches of a split: shuffled and sharded for training, in order for inference.

A split is any of:

- a ``LensingDataset`` held in memory (its ``.images`` FloatTensor (N, 1, H, W) and
  ``.labels``), batched by indexing that one tensor: no DataLoader, no per-image Python;
- a pair ``(images FloatTensor (N, 1, H, W), labels LongTensor (N,))``, the same way;
- any other map-style dataset of ``(image, label)`` items, read by a DataLoader.

``in_memory(split)`` tells the first two apart from the third; every function here asks it
rather than looking at the split's type itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from lensing.core import distributed

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, 1, H, W), labels (B,)


def in_memory(split: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` tensors of a split held in memory; None for one read item by item."""
    if isinstance(split, (tuple, list)) and len(split) == 2:
        images, labels = split
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} labels")
        return images, torch.as_tensor(labels)
    images = getattr(split, "images", None)
    if images is not None:
        return images, torch.as_tensor(split.labels)
    return None


def ordered_batches(split: Any, batch_size: int) -> Iterator[Batch]:
    """The split's ``(images, labels)`` batches in split order, on the CPU."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    held = in_memory(split)
    if held is None:
        yield from torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=False)
        return
    images, labels = held
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def share(split: Any, start: int, stop: int) -> Any:
    """Items ``start..stop-1`` of a split, as a split again."""
    held = in_memory(split)
    if held is None:
        return torch.utils.data.Subset(split, range(start, stop))
    images, labels = held
    return images[start:stop], labels[start:stop]


class TrainBatches:
    """Shuffled training batches ``(images (B, 1, H, W), labels (B,))`` on the device.

    With the split in memory, each epoch indexes its tensor with a permutation drawn from
    ``generator``. On CUDA the whole tensor is moved to the GPU once when it takes under a
    quarter of its memory, so a batch costs no transfer at all; otherwise batches go through
    pinned memory. A split read item by item goes through a DataLoader with ``num_workers``
    processes, in the same order.

    In a data-parallel job (``rank``, ``world_size``; by default this process's place in the
    current process group) every rank draws the same permutation (same seed, same draws) and
    keeps its share of it (``distributed.shard_epoch``): disjoint, padded by wrap-around to
    ``ceil(N / world_size)`` images per rank, so every rank takes ``len(self)`` steps of
    ``batch_size`` images and a step's global batch is ``batch_size * world_size``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        num_workers: int = 2,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        world = distributed.current()
        self.rank = world.rank if rank is None else rank
        self.world_size = world.world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank {self.rank!r} out of range; expected 0 <= rank < {self.world_size}"
            )
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        held = in_memory(dataset)
        # A pair (images, labels) has 2 items but len(images) images.
        self.n = len(held[0]) if held is not None else len(dataset)
        # Images this rank sees per epoch (the padded share).
        self.n_local = -(-self.n // self.world_size)
        self.loader = None
        if held is not None:
            self.images, self.labels = held
            if device.type == "cuda" and _fits_on_gpu(self.images, device):
                self.images, self.labels = self.images.to(device), self.labels.to(device)
        else:
            self.loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                # The data generator drives the sampler only; given to the DataLoader too, it
                # would also draw the workers' base seed and shift the order.
                sampler=_ShareSampler(self),
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0,
            )

    def __len__(self) -> int:
        return math.ceil(self.n_local / self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """Draw the next epoch's permutation and return this rank's share (LongTensor)."""
        order = torch.randperm(self.n, generator=self.generator)
        return distributed.shard_epoch(order, self.rank, self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.loader is not None:
            for images, labels in self.loader:
                yield self._to_device(images), labels.to(self.device, non_blocking=True)
            return
        order = self.epoch_order().to(self.images.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            images, labels = self.images[index], self.labels[index]
            # By type: a split moved to "cuda" sits on "cuda:0", which is the same place.
            if images.device.type != self.device.type:
                if self.device.type == "cuda":
                    images, labels = images.pin_memory(), labels.pin_memory()
                images = self._to_device(images)
                labels = labels.to(self.device, non_blocking=True)
            yield images, labels

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True)


class _ShareSampler(torch.utils.data.Sampler):
    """The DataLoader's order: the same seeded, sharded permutation as in memory."""

    def __init__(self, batches: TrainBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return self.batches.n_local

    def __iter__(self) -> Iterator[int]:
        return iter(self.batches.epoch_order().tolist())


def _fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    total = torch.cuda.get_device_properties(device).total_memory
    return images.element_size() * images.nelement() < 0.25 * total
