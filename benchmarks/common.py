"""What every benchmark shares: the machine record, the cached simulated set, tables."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensing.core.constants import CLASSES, DATA_DIR, MANIFEST

BENCH_SIM_DIR = DATA_DIR / "bench_sim"  # cached simulated set of the quick benchmarks
BENCH_SIM_FULL_DIR = DATA_DIR / "bench_sim_full"  # the same for --full
SIM_SEED = 7  # seed of the benchmark sets (not the default 0, so they differ from make run's)


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the markdown tables."""
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    from lensing.core.runtime import cpu_has_native_bf16, resolve_precision

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
        "auto_precision": resolve_precision("auto", torch.device("cpu")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def ensure_sim_set(root: Path, counts: dict[str, int], workers: int | None = None) -> Path:
    """The simulated benchmark set at ``root``, simulated on first use and then reused.

    A set made by another version of the simulator or with other counts is rewritten.
    """
    from lensing.simulate import simulate_dataset

    try:
        simulate_dataset(root, counts, seed=SIM_SEED, workers=workers, progress=True)
    except ValueError as error:
        if "was simulated with" not in str(error):
            raise
        log(f"{root}: {error}; rewriting it for this simulator")
        simulate_dataset(root, counts, seed=SIM_SEED, workers=workers, progress=True, force=True)
    if not (root / MANIFEST).is_file():
        raise RuntimeError(f"simulating {root} left no {MANIFEST}")
    return root


class InMemorySplit:
    """A few images of a LensingDataset, with the attributes training and prediction read
    (``images`` (N, 1, H, W) float32, ``labels`` (N,) long, ``files``)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, files: list[Path], root: Path
    ) -> None:
        self.images, self.labels, self.files, self.root = images, labels, files, Path(root)
        self.skipped: list = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(CLASSES)).tolist()
        return dict(zip(CLASSES, counts, strict=True))


def first_per_class(dataset: Any, per_class: int) -> InMemorySplit:
    """The first ``per_class`` images of every class of an in-memory dataset."""
    labels = dataset.labels
    picked = [torch.nonzero(labels == k).flatten()[:per_class] for k in range(len(CLASSES))]
    keep = torch.cat(picked)
    return InMemorySplit(
        dataset.images[keep],
        labels[keep],
        [dataset.files[i] for i in keep.tolist()],
        dataset.root,
    )


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
        "runs": [float(v) for v in array],
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 3 decimals below 10, 1 below 100, else none."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            digits = 3 if abs(value) < 10 else 1 if abs(value) < 100 else 0
            return f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
