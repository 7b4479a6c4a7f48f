"""Time and peak memory of loading a split at the real set's size.

``python -m benchmarks.memory --images N`` writes a set in the real layout (N train and N/4
val images per class, each a float64 ``(1, 150, 150)`` .npy of random pixels; the real set
has N = 10,000) under ``--dir``, then measures, each in a fresh subprocess:

- first load: ``LensingDataset(root, "train")`` with no cache: every file read and the cache
  written (the files were just written, so they are likely in the page cache: a load from a
  cold disk takes longer);
- cached load: the same call again, from the cache.

After loading, each subprocess runs what training and evaluation do with the split: one
shuffled epoch of ``TrainBatches`` (batches of 256 on the CPU, about 46 MB for two alive at
once) and one ordered pass (``ordered_batches``), touching every image. Peak memory is the
process's peak resident set (``VmHWM``). The baseline is the same process's resident set
after importing torch and lensing and a first tensor operation, before loading; the ratio is
(peak - baseline) over the float32 bytes the split holds, so it counts what the data costs and
not the interpreter.

The set is deleted afterwards unless ``--keep``; a kept set of the same size is reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lensing.core.constants import CLASSES, IMAGE_SIZE

REPO = Path(__file__).resolve().parents[1]
VAL_SHARE = 4  # the real set has a quarter as many val images as train images
MB = 1e6

# Runs in a fresh interpreter, from the folder holding this benchmark's lensing package.
CHILD = r"""
import json, sys, time
import torch
from lensing.data.batches import TrainBatches, ordered_batches
from lensing.data.dataset import LensingDataset


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def mapped_file(address):
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) > 5:
            return fields[5].endswith(".npy")
    return False


batch = int(sys.argv[2])
torch.ones(8).sum()  # lazy initialization counts as baseline
baseline = status("VmRSS")
start = time.perf_counter()
ds = LensingDataset(sys.argv[1], "train", progress=False)
load_s = time.perf_counter() - start
load_peak = status("VmHWM")
touched = 0.0
generator = torch.Generator().manual_seed(0)
for images, _ in TrainBatches(ds, batch, generator, torch.device("cpu"), rank=0, world_size=1):
    touched += float(images.sum())
for images, _ in ordered_batches(ds, batch):
    touched += float(images.sum())
print(json.dumps({
    "images": len(ds), "data_bytes": ds.images.nelement() * ds.images.element_size(),
    "load_s": load_s, "baseline": baseline, "load_peak": load_peak,
    "peak": status("VmHWM"), "mapped": mapped_file(ds.images.data_ptr()),
}))
"""


def write_set(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` train and ``n // 4`` val images per class, float64 (1, 150, 150), random pixels;
    reused when ``root`` already holds a set written with the same ``n``."""
    marker = root / "memory-benchmark.json"
    if marker.is_file() and json.loads(marker.read_text()) == {"images": n, "seed": seed}:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(n // VAL_SHARE, 1))):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(1, count + 1):
                np.save(folder / f"{i}.npy", rng.random((1, IMAGE_SIZE, IMAGE_SIZE)))
    marker.write_text(json.dumps({"images": n, "seed": seed}))
    return root


def measure(root: Path, batch_size: int = 256) -> dict:
    """One load of the train split, then an epoch and an ordered pass over it in batches of
    ``batch_size``, in a fresh subprocess: its figures (bytes, seconds) as a dict."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(batch_size)],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the measuring subprocess failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict], n: int) -> str:
    from benchmarks.common import cpu_model

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB; lensing from {REPO}",
        f"Set: {n} train + {max(n // VAL_SHARE, 1)} val images per class, float64 .npy; "
        "the train split after the 10% test split",
        "",
        "| load | images | time s | baseline RSS MB | peak RSS after load MB "
        "| peak RSS after epoch + eval MB | float32 held MB | ratio (peak - baseline) / held "
        "| mapped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ratio = (r["peak"] - r["baseline"]) / r["data_bytes"]
        lines.append(
            f"| {name} | {r['images']} | {r['load_s']:.2f} | {r['baseline'] / MB:.0f} "
            f"| {r['load_peak'] / MB:.0f} | {r['peak'] / MB:.0f} | {r['data_bytes'] / MB:.0f} "
            f"| {ratio:.2f} | {r['mapped']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--images", type=int, default=1000, help="train images per class")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "lensing-memory-benchmark",
        help="where the set is written (needs about 0.23 MB per image)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the set for another run")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be at least 2")
    try:
        print(f"writing {args.images} images per class under {args.dir}", file=sys.stderr)
        root = write_set(args.dir, args.images)
        shutil.rmtree(root / ".cache", ignore_errors=True)
        rows = {"first": measure(root), "cached": measure(root)}
        print(table(rows, args.images))
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
