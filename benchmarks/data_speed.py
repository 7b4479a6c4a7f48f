"""Data speed: simulator images per second, and how long a real-sized split takes to load.

The load benchmark writes ``n_images`` valid files in the real format (float64 (1, 150, 150)
in [0, 1], ``train/<class>/<i>.npy``; the real set's train split holds 30,000) into a scratch
folder under ``data/``, made from simulated images with a little noise so no two files are
the same, and deletes it afterwards. It is not the simulator (far too slow for 30,000 images).

- cold: the first ``LensingDataset(root, "train")``: every file opened, validated and read,
  and the consolidated cache written. The files are evicted from the page cache first
  (``posix_fadvise(DONTNEED)`` on each, after a sync), so they really come from disk.
- cached: the second load, one sequential read of the consolidated cache (also evicted from
  the page cache first).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, markdown_table
from lensing.core.atomic import atomic_save_npy
from lensing.core.constants import CLASSES, DATA_DIR

BYTES_PER_FILE = 180_128  # a float64 (1, 150, 150) .npy: 128-byte header + 22,500 x 8
DISK_MARGIN = 2.0  # free space wanted: files + float32 cache, times this margin


def simulate_rate(images_per_class: int, workers: int | None = None, work_dir: Path = DATA_DIR):
    """Images per second of ``lensing.simulate.simulate_dataset`` for ``3 x (images_per_class +
    1)`` images (train plus one val image per class) with ``workers`` processes."""
    from lensing.simulate import simulate_dataset

    workers = workers or os.cpu_count() or 1
    work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=work_dir, prefix="bench_simulate_"))
    try:
        counts = {"train": images_per_class, "val": 1, "test": 0}
        manifest = simulate_dataset(folder / "set", counts, workers=workers, progress=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    written = manifest["_run"]
    return {
        "images": written["written"],
        "workers": workers,
        "seconds": written["seconds"],
        "images_per_s": written["written"] / written["seconds"],
    }


def _evict(paths: list[Path]) -> None:
    """Drop these files from the page cache, so the next read comes from disk."""
    if not hasattr(os, "posix_fadvise"):
        return
    os.sync()  # dirty pages cannot be dropped

    def drop(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(drop, paths))


def write_fake_split(root: Path, n_images: int, sources: np.ndarray, seed: int = 0) -> list[Path]:
    """``n_images`` files (a third per class) in the real format under ``root/train``, plus one
    ``root/test`` image per class (so the whole of train is the split, as with a test folder).

    sources: (M, 1, 150, 150) float images; each file is one of them with Gaussian noise
    (sigma 0.01), clipped to [0, 1] and min-max normalized again. Returns the train paths.
    """
    per_class = n_images // len(CLASSES)
    rng = np.random.default_rng(seed)
    jobs = []
    for split, count in (("train", per_class), ("test", 1)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            jobs += [(folder / f"{i}.npy", k) for i in range(1, count + 1)]
    seeds = rng.integers(0, 2**32, len(jobs))

    def write(job: tuple[tuple[Path, int], int]) -> None:
        (path, _), job_seed = job
        local = np.random.default_rng(job_seed)
        image = sources[local.integers(len(sources))].astype(np.float64)
        image = np.clip(image + local.normal(0.0, 0.01, image.shape), 0.0, 1.0)
        image = (image - image.min()) / (image.max() - image.min())
        atomic_save_npy(path, image)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, zip(jobs, seeds, strict=True)))
    return [path for path, _ in jobs if path.parent.parent.name == "train"]


def run_load_time(
    n_images: int, sources: np.ndarray, *, work_dir: Path = DATA_DIR
) -> dict[str, Any]:
    """Cold and cached LensingDataset load time of an ``n_images`` train split.

    n_images is lowered (and the result says so, with a linear extrapolation) when the disk
    has too little free space for the files and the cache.
    """
    from lensing.data.dataset import LensingDataset

    work_dir.mkdir(parents=True, exist_ok=True)
    wanted = n_images
    per_image = BYTES_PER_FILE + 90_000  # the file and its float32 copy in the cache
    free = shutil.disk_usage(work_dir).free
    if wanted * per_image * DISK_MARGIN > free:
        n_images = max(300, int(free / (per_image * DISK_MARGIN)) // 3 * 3)
        log(f"load: only {free / 1e9:.1f} GB free; measuring {n_images} images, not {wanted}")
    folder = Path(tempfile.mkdtemp(dir=work_dir, prefix="bench_load_"))
    try:
        start = time.perf_counter()
        files = write_fake_split(folder, n_images, sources)
        write_seconds = time.perf_counter() - start
        log(f"load: wrote {len(files)} files in {write_seconds:.0f} s")
        _evict(files)
        start = time.perf_counter()
        cold = LensingDataset(folder, "train", progress=False)
        cold_seconds = time.perf_counter() - start
        n_loaded = len(cold)
        del cold
        _evict(list((folder / ".cache").glob("*")))
        start = time.perf_counter()
        cached = LensingDataset(folder, "train", progress=False)
        cached_seconds = time.perf_counter() - start
        del cached
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "n_images": n_loaded,
        "cold": cold_seconds,
        "cached": cached_seconds,
        "write_seconds": write_seconds,
        "cold_images_per_s": n_loaded / cold_seconds,
    }
    if n_loaded < wanted:
        scale = wanted / n_loaded
        result["extrapolated_to"] = {
            "n_images": wanted,
            "cold": cold_seconds * scale,
            "cached": cached_seconds * scale,
            "note": "disk too small for the full split: linear extrapolation",
        }
    return result


def data_speed_table(simulate: dict[str, Any] | None, load: dict[str, Any] | None) -> str:
    """Markdown table of the simulator and load-time results."""
    rows = []
    if simulate:
        rows.append(
            [
                f"simulate {simulate['images']} images, {simulate['workers']} workers",
                f"{simulate['images_per_s']:.1f} images/s",
                f"{simulate['seconds']:.1f} s",
            ]
        )
    if load:
        n = load["n_images"]
        rows.append(
            [
                f"load {n:,} images, cold (files, cache written)",
                f"{load['cold_images_per_s']:.0f} images/s",
                f"{load['cold']:.1f} s",
            ]
        )
        rows.append(
            [
                f"load {n:,} images, cached",
                f"{n / load['cached']:.0f} images/s",
                f"{load['cached']:.1f} s",
            ]
        )
        if "extrapolated_to" in load:
            e = load["extrapolated_to"]
            rows.append(
                [
                    f"extrapolated to {e['n_images']:,} images",
                    "",
                    f"cold {e['cold']:.0f} s, cached {e['cached']:.1f} s",
                ]
            )
    return "Data speed\n\n" + markdown_table(["what", "rate", "time"], rows)


if __name__ == "__main__":
    from benchmarks.suite import main_only

    sys.exit(main_only("simulate,load"))
