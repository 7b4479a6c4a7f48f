"""Loading the lensing images: discovery, validation, an in-memory tensor cache, the test split.

Layout (DESIGN.md): ``<root>/<split>/<class>/<n>.npy`` with class folders ``no``, ``sphere``,
``vort``. Each file holds one image, shape ``(1, 150, 150)`` (also accepted: ``(150, 150)`` and
``(150, 150, 1)``), finite values, min-max normalized to [0, 1] in the real set.

A file that cannot be used (empty, truncated, pickled or object array, wrong shape, non-numeric
or non-finite values) is skipped and listed in ``dataset.skipped`` with its reason; one warning
sums them up. It never stops a run. A missing class folder or a split with no usable file is
an error that names the folder.

The first load of a split reads every file once and writes a consolidated cache,
``<root>/.cache/<split>-<fingerprint>.npy`` (float32 images) with a ``.json`` index beside it.
The fingerprint covers every file's path, size and modification time, so adding, removing or
touching a file rebuilds the cache; a second load is one sequential read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lensing.config import CLASSES, IMAGE_SIZE, MANIFEST, SPLITS
from lensing.io import atomic_save_npy, atomic_write_json

ACCEPTED_SHAPES = (
    (1, IMAGE_SIZE, IMAGE_SIZE),
    (IMAGE_SIZE, IMAGE_SIZE),
    (IMAGE_SIZE, IMAGE_SIZE, 1),
)
NPY_MAGIC = b"\x93NUMPY"  # first bytes of every .npy file
TEST_SPLIT_FILE = "test_split.json"  # the written-down test split, when the set has no test/
CACHE_DIR = ".cache"
CACHE_VERSION = 1  # bump when the cache format changes, so old caches are ignored


class BadFileError(ValueError):
    """A data file that cannot be used; the message is the reason."""


class DataWarning(UserWarning):
    """Skipped files or an unbalanced split."""


def natural_key(path: str | Path) -> tuple:
    """Sort key putting ``2.npy`` before ``10.npy``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", Path(path).name)
    return tuple((1, int(p), p) if p.isdigit() else (0, 0, p) for p in parts)


def data_kind(root: str | Path) -> str:
    """``"simulated"`` when the simulator's manifest sits in ``root``, otherwise ``"real"``."""
    return "simulated" if (Path(root) / MANIFEST).is_file() else "real"


def find_split_files(root: str | Path, split: str) -> list[tuple[Path, int]]:
    """Every ``.npy`` of ``<root>/<split>/<class>/``, in natural order, with its class index.

    Raises FileNotFoundError naming the split or class folder when it is missing.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"no split folder {split_dir}; expected {split_dir}/{{{','.join(CLASSES)}}}/*.npy"
        )
    found = []
    for label, name in enumerate(CLASSES):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise FileNotFoundError(
                f"missing class folder {class_dir}; every split needs the folders "
                f"{', '.join(CLASSES)}"
            )
        found += [(p, label) for p in sorted(class_dir.glob("*.npy"), key=natural_key)]
    return found


def load_image(path: str | Path) -> np.ndarray:
    """One image as float32 ``(1, 150, 150)``; raises BadFileError saying why it cannot be used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
            if not magic:
                raise BadFileError("empty file (0 bytes)")
            if magic != NPY_MAGIC:
                # np.load would take anything else for a pickle; pickles are never loaded.
                raise BadFileError("not a .npy file (no NumPy header; pickles are refused)")
            f.seek(0)
            array = np.load(f, allow_pickle=False)
    except BadFileError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise BadFileError("object array (refused: allow_pickle=False)") from None
        raise BadFileError(f"unreadable or truncated .npy ({err})") from None
    except (OSError, EOFError) as err:
        raise BadFileError(f"unreadable or truncated ({type(err).__name__}: {err})") from None
    if not isinstance(array, np.ndarray):
        raise BadFileError(f"not a single array (got {type(array).__name__})")
    if array.dtype.kind not in "fiu":
        raise BadFileError(f"non-numeric dtype {array.dtype}")
    if array.shape not in ACCEPTED_SHAPES:
        raise BadFileError(
            f"shape {array.shape}; expected one of {', '.join(map(str, ACCEPTED_SHAPES))}"
        )
    array = array.reshape(1, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
    if not np.isfinite(array).all():
        raise BadFileError("non-finite values (nan or inf)")
    return array


def check_balance(counts: dict[str, int], tolerance: float = 0.2, name: str = "split") -> bool:
    """Warn when a class count is off the mean by more than ``tolerance`` (a share, 0.2 = 20%)."""
    if tolerance < 0:
        raise ValueError(f"balance tolerance {tolerance!r}; expected a share >= 0")
    mean = sum(counts.values()) / max(len(counts), 1)
    off = {c: n for c, n in counts.items() if abs(n - mean) > tolerance * mean}
    if off:
        warnings.warn(
            f"{name} is unbalanced: counts {counts}, mean {mean:.0f}; "
            f"{', '.join(off)} off by more than {tolerance:.0%}",
            DataWarning,
            stacklevel=2,
        )
    return not off


def split_off_test_set(
    root: str | Path, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[tuple[Path, int]]]:
    """The train and test file lists of a set, test held out from selection.

    With a ``<root>/test/`` folder, both splits are used as they are. Without one (the real set
    has only train and val), a stratified ``test_fraction`` of each class of train, drawn with
    ``seed``, becomes the test set. That choice is written to ``<root>/test_split.json`` once and
    reused on every later call, whatever the arguments, so every re-run sees the same split;
    files added to train later stay in train. Train and test never share a file.
    """
    root = Path(root)
    train = find_split_files(root, "train")
    if (root / "test").is_dir():
        test = find_split_files(root, "test")
    else:
        record_path = root / TEST_SPLIT_FILE
        if record_path.is_file():
            chosen = set(json.loads(record_path.read_text())["test"])
        else:
            if not 0 < test_fraction < 1:
                raise ValueError(f"test_fraction {test_fraction!r}; expected 0 < share < 1")
            chosen = _draw_test_files(root, train, test_fraction, seed)
            atomic_write_json(
                record_path,
                {
                    "seed": seed,
                    "test_fraction": test_fraction,
                    "test": sorted(chosen, key=natural_key),
                },
            )
        test = [(p, y) for p, y in train if _relative(root, p) in chosen]
        train = [(p, y) for p, y in train if _relative(root, p) not in chosen]
    if not test:
        raise ValueError(
            f"empty test set for {root}: {root / 'test'} has no .npy files"
            if (root / "test").is_dir()
            else f"empty test set for {root}: train is too small to hold out a test share"
        )
    return {"train": train, "test": test}


def _draw_test_files(root: Path, train, fraction: float, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    chosen = set()
    for label in range(len(CLASSES)):
        files = [_relative(root, p) for p, y in train if y == label]
        n_test = int(round(fraction * len(files))) if len(files) > 1 else 0
        chosen.update(files[i] for i in rng.permutation(len(files))[:n_test])
    return chosen


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


class LensingDataset(Dataset):
    """The images of one split, as ``(float32 tensor (1, 150, 150), class index)`` items.

    Parameters
    ----------
    root: data folder holding ``train/``, ``val/`` and optionally ``test/``.
    split: ``"train"``, ``"val"`` or ``"test"``. Without a ``test/`` folder, ``"test"`` is the
        held-out share of train from :func:`split_off_test_set` and ``"train"`` the rest.
    in_memory: hold the whole split as one tensor ``self.images`` (N, 1, 150, 150), float32
        (30,000 images take 2.7 GB). ``False`` reads each file when it is asked for.
    cache: write and reuse the consolidated cache under ``<root>/.cache/``.
    progress: show a progress bar while reading files.
    balance_tolerance: warn when a class count is off the mean by more than this share.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        in_memory: bool = True,
        cache: bool = True,
        progress: bool = True,
        balance_tolerance: float = 0.2,
        test_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.kind = data_kind(self.root)
        if split == "val":
            candidates = find_split_files(self.root, "val")
        else:
            candidates = split_off_test_set(self.root, test_fraction, seed)[split]
        files, labels, self.skipped, images = self._load(candidates, in_memory, cache, progress)
        if not files:
            raise ValueError(
                f"no usable .npy file in {self.root / split} "
                f"({len(self.skipped)} skipped): expected {'/'.join(CLASSES)} images there"
            )
        self.files = files
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.images = torch.from_numpy(images) if images is not None else None
        if self.skipped:
            shown = "; ".join(f"{p} ({why})" for p, why in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            warnings.warn(
                f"{self.split}: skipped {len(self.skipped)} of {len(candidates)} files: "
                f"{shown}{more}",
                DataWarning,
                stacklevel=2,
            )
        check_balance(self.class_counts(), balance_tolerance, name=f"{self.root}/{split}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index])
        if self.images is not None:
            return self.images[index], label
        return torch.from_numpy(load_image(self.files[index])), label

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(CLASSES)).tolist()
        return dict(zip(CLASSES, counts, strict=True))

    def __repr__(self) -> str:
        return (
            f"LensingDataset({str(self.root)!r}, {self.split!r}: {len(self)} images "
            f"{self.class_counts()}, {len(self.skipped)} skipped, {self.kind})"
        )

    def _load(self, candidates, in_memory: bool, cache: bool, progress: bool):
        """Read (or take from the cache) the valid files, their labels and, in memory, images."""
        index_path = self._cache_path(candidates) if cache else None
        if index_path is not None and index_path.is_file():
            index = json.loads(index_path.read_text())
            images_path = index_path.with_suffix(".npy")
            if index.get("version") == CACHE_VERSION and (not in_memory or images_path.is_file()):
                images = np.load(images_path, allow_pickle=False) if in_memory else None
                files = [self.root / f for f in index["files"]]
                skipped = [(self.root / f, why) for f, why in index["skipped"]]
                return files, index["labels"], skipped, images

        # Without in_memory, files are still read once to validate them, but not kept.
        shape = (len(candidates) if in_memory else 0, 1, IMAGE_SIZE, IMAGE_SIZE)
        images = np.empty(shape, np.float32)
        keep, skipped = [], []

        def read(item):
            i, (path, _) = item
            try:
                image = load_image(path)
                if in_memory:
                    images[i] = image
                return None
            except BadFileError as err:
                return str(err)

        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            results = pool.map(read, enumerate(candidates), chunksize=64)
            bar = tqdm(
                results,
                total=len(candidates),
                disable=not progress,
                unit="img",
                desc=f"loading {self.split}",
            )
            for (path, _), (i, problem) in zip(candidates, enumerate(bar), strict=True):
                if problem is None:
                    keep.append(i)
                else:
                    skipped.append((path, problem))
        images = images[keep] if in_memory and len(keep) < len(candidates) else images
        images = images if in_memory else None
        files = [candidates[i][0] for i in keep]
        labels = [candidates[i][1] for i in keep]
        if index_path is not None and files:
            self._write_cache(index_path, files, labels, skipped, images)
        return files, labels, skipped, images

    def _cache_path(self, candidates) -> Path:
        digest = hashlib.sha1(str(CACHE_VERSION).encode())
        for path, label in candidates:
            stat = path.stat()
            entry = f"{_relative(self.root, path)}|{label}|{stat.st_size}|{stat.st_mtime_ns}"
            digest.update(entry.encode() + b"\n")
        return self.root / CACHE_DIR / f"{self.split}-{digest.hexdigest()[:16]}.json"

    def _write_cache(self, index_path: Path, files, labels, skipped, images) -> None:
        """Write the cache, replacing older ones of this split; a read-only root just skips it."""
        try:
            for old in index_path.parent.glob(f"{self.split}-*"):
                old.unlink(missing_ok=True)
            if images is not None:
                atomic_save_npy(index_path.with_suffix(".npy"), images)
            atomic_write_json(
                index_path,
                {
                    "version": CACHE_VERSION,
                    "files": [_relative(self.root, p) for p in files],
                    "labels": labels,
                    "skipped": [[_relative(self.root, p), why] for p, why in skipped],
                },
            )
        except OSError as err:
            warnings.warn(
                f"could not write the cache {index_path}: {err}", DataWarning, stacklevel=3
            )


def load_splits(root: str | Path, **kwargs) -> dict[str, LensingDataset]:
    """The train, val and test datasets of ``root``; keyword arguments go to LensingDataset."""
    return {split: LensingDataset(root, split, **kwargs) for split in SPLITS}
