"""``PretrainConfig``: everything one pretraining run depends on, each value checked.

Kept apart from :mod:`lensing.training.pretrain` so that the command line reads its defaults
without importing torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from lensing.core.constants import BATCH_SIZE, CLASSES
from lensing.simulate import corpus


@dataclass
class PretrainConfig:
    """One pretraining run; saved in its checkpoint and summary."""

    out_dir: str = "models/pretrain"  # checkpoint, chunks, weights and summary go here
    images: int = 120_000  # new corpus images in all (rounded up to whole chunks)
    chunk_per_class: int = 1000  # new images per class in one chunk
    replay: int = 2  # chunks trained on together: each image is seen this many times
    batch_size: int = BATCH_SIZE  # images per optimizer step
    lr: float = 1e-3  # Adam peak learning rate of every layer group
    weight_decay: float = 0.0  # Adam L2 penalty
    warmup: float = 0.1  # one-cycle: share of the steps spent raising the rate
    hold_out: tuple[str, ...] = ()  # corpus families left out (the transfer benchmark)
    seed: int = 0  # corpus seed (offset into the reserved range) and training seed
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    precision: str = "auto"  # as in TrainConfig
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # simulating processes
    probe_per_class: int = 100  # probe images per class and family (test-i, model-a)
    probe_every: int = 5  # chunks between two probe scores

    def __post_init__(self) -> None:
        self.hold_out = tuple(sorted(self.hold_out))
        corpus.families(self.hold_out)  # checks the names
        for name in ("images", "chunk_per_class", "replay", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PretrainConfig.{name} = {value!r}; expected an integer >= 1")
        if not 0 < self.lr < 1 or not 0 < self.warmup < 1:
            raise ValueError(f"lr {self.lr!r} and warmup {self.warmup!r}: expected both in (0, 1)")

    @property
    def chunk_images(self) -> int:
        return self.chunk_per_class * len(CLASSES)

    @property
    def chunks(self) -> int:
        return math.ceil(self.images / self.chunk_images)

    def chunk_steps(self, chunk: int) -> int:
        """Optimizer steps of chunk ``chunk`` (it and up to replay - 1 chunks before it)."""
        return math.ceil(self.chunk_images * min(chunk + 1, self.replay) / self.batch_size)

    def total_steps(self, chunks: int | None = None) -> int:
        """Optimizer steps of the first ``chunks`` chunks (default: the whole run)."""
        return sum(self.chunk_steps(c) for c in range(self.chunks if chunks is None else chunks))

    def images_seen(self, chunks: int | None = None) -> int:
        """Images trained on (replays counted) in the first ``chunks`` chunks (default: all)."""
        done = self.chunks if chunks is None else chunks
        return sum(self.chunk_images * min(c + 1, self.replay) for c in range(done))
