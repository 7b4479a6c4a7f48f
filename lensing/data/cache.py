"""The consolidated cache of a split: ``<root>/.cache/<split>-<fingerprint>.{npy,json}``.

The ``.npy`` holds the split's float32 images (N, 1, 150, 150); the ``.json`` index beside it
holds the files, labels and skipped files they came from. The fingerprint (in the name) covers
every file's path, size and modification time, so any change to the split names another cache.

Memory: a cached split is memory-mapped, never read into memory: loading it costs no time and
no memory up front, pages come in from the page cache as they are used, and processes that
load the same split share them. The mapping is copy-on-write (``mmap_mode="c"``): an in-place
write to the tensor changes this process's copy of that page only, never the file.

Building writes the images straight into a preallocated, memory-mapped ``.npy`` on a temporary
path (:class:`lensing.core.atomic.AtomicNpyMemmap`), renamed into place once complete; the index is
written after it. A cache is used only when both are there and agree, so a crash at any point
leaves no cache that looks valid. Cache files are replaced by renaming, never rewritten in
place, so a process that has one mapped is never pulled out from under.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from lensing.core.atomic import (
    STALE_TMP_S,
    AtomicNpyMemmap,
    atomic_write_json,
    remove_stale_temporaries,
)
from lensing.core.constants import IMAGE_SIZE

CACHE_DIR = ".cache"
# Bump when the cache's content changes, so old caches are ignored. 2: images min-max
# normalized on read (version 1 held them as the files did).
CACHE_VERSION = 2
ITEM_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)  # one image as the dataset gives it


class DataWarning(UserWarning):
    """Skipped files, an unbalanced split, a cache that could not be written."""


def cache_index_path(root: Path, split: str, lines: list[str]) -> Path:
    """The index path of the cache whose fingerprint lines are ``lines`` (one per file)."""
    digest = hashlib.sha1(str(CACHE_VERSION).encode())
    for line in lines:
        digest.update(line.encode(errors="surrogateescape") + b"\n")
    return root / CACHE_DIR / f"{split}-{digest.hexdigest()[:16]}.json"


def map_images(path: Path, n: int) -> np.ndarray | None:
    """The cached images at ``path`` mapped copy-on-write, or None unless they are float32
    ``(n, 1, 150, 150)``. Raises OSError or ValueError for a missing or damaged file."""
    mapped = np.load(path, mmap_mode="c", allow_pickle=False)
    if mapped.shape != (n, *ITEM_SHAPE) or mapped.dtype != np.float32:
        return None
    return mapped


def read_cache(root: Path, index_path: Path, in_memory: bool):
    """The cached (files, labels, skipped, images or None), or None when the cache is missing,
    of another version, or damaged in any way (then it is rebuilt)."""
    images_path = index_path.with_suffix(".npy")
    if not index_path.is_file() or (in_memory and not images_path.is_file()):
        return None
    try:
        index = json.loads(index_path.read_bytes())
        if index.get("version") != CACHE_VERSION:
            return None
        files = [root / f for f in index["files"]]
        labels = [int(y) for y in index["labels"]]
        skipped = [(root / f, str(why)) for f, why in index["skipped"]]
        images = None
        if in_memory:
            images = map_images(images_path, len(files))
            if images is None:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return (files, labels, skipped, images) if len(labels) == len(files) else None


def open_image_file(index_path: Path, n: int) -> AtomicNpyMemmap | None:
    """A temporary memory-mapped ``.npy`` of ``n`` images to read the split into, or None (with
    a warning) when the cache folder cannot take it (read-only, full)."""
    try:
        _remove_stale(index_path)
        return AtomicNpyMemmap(index_path.with_suffix(".npy"), (n, *ITEM_SHAPE), np.float32)
    except OSError as err:
        _warn(index_path, err)
        return None


def write_cache(root: Path, index_path: Path, files, labels, skipped, sink) -> np.ndarray | None:
    """Commit the images ``sink`` holds (its first ``len(files)`` rows; ``sink`` None: no
    images) and write the index, replacing older caches of this split. Returns the committed
    images mapped (None without ``sink``, or when the cache could not be written: then the
    caller keeps what it has, with a warning)."""
    split = index_path.name.split("-", 1)[0]
    try:
        for old in index_path.parent.glob(f"{split}-*"):
            old.unlink(missing_ok=True)
        images = None
        if sink is not None:
            images = map_images(sink.commit(len(files)), len(files))
        atomic_write_json(
            index_path,
            {
                "version": CACHE_VERSION,
                "files": [f.relative_to(root).as_posix() for f in files],
                "labels": labels,
                "skipped": [[p.relative_to(root).as_posix(), why] for p, why in skipped],
            },
        )
    except OSError as err:
        _warn(index_path, err)
        return None
    return images


def compact(images: np.ndarray, keep: list[int]) -> None:
    """Move rows ``keep`` (ascending) to the front of ``images``, in place, in order."""
    for row, source in enumerate(keep):
        if row != source:
            images[row] = images[source]


def _remove_stale(index_path: Path) -> None:
    """Delete temporary cache files of this split left by a crashed build."""
    split = index_path.name.split("-", 1)[0]
    remove_stale_temporaries(index_path.parent, f".{split}-*.tmp", STALE_TMP_S)


def _warn(index_path: Path, err: OSError) -> None:
    warnings.warn(f"could not write the cache {index_path}: {err}", DataWarning, stacklevel=4)
