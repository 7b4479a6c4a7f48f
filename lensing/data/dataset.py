"""Loading the lensing images: discovery, validation, an in-memory tensor cache, the test split.

Layout: ``<root>/<split>/<class>/<n>.npy`` (FITS files are read too) with class folders
``no``, ``sphere``, ``vort``. Each file holds one 150 x 150 image in a layout
:func:`lensing.data.readers.image.read_image` accepts, min-max normalized to [0, 1] as it is
read, so photon counts and pre-normalized files give the same tensor.

A file that cannot be used (unreadable, truncated, a bare pickle, wrong shape, non-numeric,
non-finite or constant pixels, a folder or FIFO with an image's name, a dangling symlink, a
symlink loop) is skipped and listed in ``dataset.skipped`` with its reason; one warning sums
them up. It never stops a run. A missing class folder or a split with no usable file is an
error that names the folder.

The first load of a split reads every file once and writes a consolidated cache,
``<root>/.cache/<split>-<fingerprint>.npy`` (float32 images) with a ``.json`` index beside it.
The fingerprint covers every file's path, size and modification time (and which entries cannot
be stat-ed), so adding, removing or touching a file rebuilds the cache. The cache is
memory-mapped, not read into memory (see :mod:`lensing.data.cache`): a cached load takes well
under a second and the split's pixels take memory only once, as they are used.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lensing.core.constants import CLASSES, MANIFEST, SPLITS
from lensing.core.progress import bar
from lensing.data.cache import (
    CACHE_DIR,
    CACHE_VERSION,
    ITEM_SHAPE,
    DataWarning,
    cache_index_path,
    compact,
    open_image_file,
    read_cache,
    write_cache,
)
from lensing.data.download import read_source_marker
from lensing.data.readers.checks import ImageError, unstatable_reason
from lensing.data.readers.image import (
    file_fingerprint,
    read_image,
)
from lensing.data.splits import (
    TEST_SPLIT_FILE,
    find_split_files,
    relative_name,
    split_off_test_set,
    stratified_subset,
)

__all__ = [
    "CACHE_DIR",
    "CACHE_VERSION",
    "ITEM_SHAPE",
    "TEST_SPLIT_FILE",
    "DataWarning",
    "LensingDataset",
    "check_balance",
    "find_split_files",
    "load_image",
    "load_splits",
    "provenance",
    "split_off_test_set",
]


def provenance(root: str | Path) -> str:
    """Where the set in ``root`` came from, as far as ``root`` itself can show.

    ``"simulated"``: the simulator's manifest (``config.MANIFEST``) is there.
    ``"deeplense-test-i"``: the download's provenance marker is there and valid
    (``lensing.data.download.read_source_marker``). ``"external"``: anything else; such a folder
    may hold anything, so it is never called real.
    """
    root = Path(root)
    if (root / MANIFEST).is_file():
        return "simulated"
    if read_source_marker(root) is not None:
        return "deeplense-test-i"
    return "external"


def load_image(path: str | Path) -> np.ndarray:
    """One image file as float32 ``(1, 150, 150)``, min-max normalized to [0, 1]; raises
    ImageError saying why it cannot be used (see ``read_image``)."""
    return read_image(path).array.reshape(ITEM_SHAPE)


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


class LensingDataset(Dataset):
    """The images of one split, as ``(float32 tensor (1, 150, 150), class index)`` items.

    Parameters
    ----------
    root: data folder holding ``train/``, ``val/`` and optionally ``test/``.
    split: ``"train"``, ``"val"`` or ``"test"``. Without a ``test/`` folder, ``"test"`` is the
        held-out share of train from :func:`split_off_test_set` and ``"train"`` the rest.
    in_memory: hold the whole split as one tensor ``self.images`` (N, 1, 150, 150), float32
        (30,000 images take 2.7 GB). With ``cache``, it maps the cache file copy-on-write
        (pages are read as they are used and shared between processes; an in-place write
        changes this process's copy only). ``False`` reads each file when it is asked for.
    cache: write and reuse the consolidated cache under ``<root>/.cache/``.
    progress: show a progress bar while reading files.
    balance_tolerance: warn when a class count is off the mean by more than this share.
    test_fraction, seed: passed to :func:`split_off_test_set`.
    per_class: keep at most this many images of each class (:func:`stratified_subset`, drawn
        with ``seed`` from the split's files, test share already held out); None keeps all.

    Attributes: ``files`` (list of Path), ``labels`` (LongTensor (N,)), ``images`` (tensor or
    None), ``skipped`` (list of (Path, reason str)), ``kind`` (the :func:`provenance`).
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
        per_class: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.kind = provenance(self.root)
        if split == "val":
            candidates = find_split_files(self.root, "val")
        else:
            candidates = split_off_test_set(self.root, test_fraction, seed)[split]
        if per_class is not None:
            candidates = stratified_subset(candidates, per_class, seed)
        files, labels, self.skipped, images = self._load(candidates, in_memory, cache, progress)
        if not files:
            raise ValueError(
                f"no usable image file in {self.root / split} "
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
        """The valid files, their labels, the skipped (path, reason) and, in memory, images;
        from the cache when it matches the files' fingerprints, else by reading every file."""
        problems: dict[int, str] = {}
        lines = []
        for i, (path, label) in enumerate(candidates):
            fingerprint = file_fingerprint(path)
            if fingerprint is None:
                # Marked in the digest, so the cache is rebuilt once the entry can be read.
                problems[i] = unstatable_reason(path) or "appeared while the folder was read"
                lines.append(f"{relative_name(self.root, path)}|{label}|-")
            else:
                lines.append(
                    f"{relative_name(self.root, path)}|{label}|{fingerprint[0]}|{fingerprint[1]}"
                )
        index_path = cache_index_path(self.root, self.split, lines) if cache else None
        cached = read_cache(self.root, index_path, in_memory) if index_path is not None else None
        if cached is not None:
            return cached
        return self._build(candidates, problems, index_path, in_memory, progress)

    def _build(self, candidates, problems, index_path, in_memory: bool, progress: bool):
        """``_load`` from the files, writing the cache when ``index_path`` is given.

        In memory, the images go straight into the cache file being written (mapped), or,
        without one, into one array: never a list of arrays and a stacked copy of them.
        """
        n = len(candidates)
        sink = open_image_file(index_path, n) if in_memory and index_path is not None else None
        try:
            if sink is not None:
                images = sink.array
            else:  # without in_memory, files are still read once to validate them
                images = np.zeros((n, *ITEM_SHAPE), np.float32) if in_memory else None
            self._read_files(candidates, problems, images, progress)
            keep = [i for i in range(n) if i not in problems]
            if images is not None and len(keep) < n:
                compact(images, keep)
                images = images[: len(keep)]
            files = [candidates[i][0] for i in keep]
            labels = [candidates[i][1] for i in keep]
            skipped = [(candidates[i][0], why) for i, why in sorted(problems.items())]
            if index_path is not None and files:
                mapped = write_cache(self.root, index_path, files, labels, skipped, sink)
                # The committed file mapped copy-on-write; the one being written only when
                # the cache could not be written (its rows stay valid either way).
                images = mapped if mapped is not None else images
            return files, labels, skipped, images
        finally:
            if sink is not None:
                sink.discard()

    def _read_files(self, candidates, problems: dict[int, str], images, progress: bool) -> None:
        """Read every candidate not yet in ``problems`` into ``images`` (N, 1, 150, 150) float32
        (None: validate only); a file that cannot be used goes into ``problems`` with its
        reason."""

        def read(i: int) -> str | None:
            if i in problems:
                return problems[i]
            try:
                array = read_image(candidates[i][0]).array
            except ImageError as err:
                return err.reason
            if images is not None:
                images[i, 0] = array
            return None

        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            results = pool.map(read, range(len(candidates)), chunksize=64)
            shown = bar(
                results,
                enabled=progress,
                total=len(candidates),
                unit="img",
                desc=f"loading {self.split}",
            )
            for i, problem in enumerate(shown):
                if problem is not None:
                    problems[i] = problem


def load_splits(
    root: str | Path, per_class: dict[str, int] | None = None, **kwargs
) -> dict[str, LensingDataset]:
    """The train, val and test datasets of ``root``; keyword arguments go to LensingDataset.

    per_class: images per class to keep of each split ({"train": 400, ...}, a stratified
        subset; a split not named keeps all), or None for every image.
    """
    sizes = per_class or {}
    unknown = sorted(set(sizes) - set(SPLITS))
    if unknown:
        raise ValueError(f"per_class names {unknown}; expected some of {SPLITS}")
    return {
        split: LensingDataset(root, split, per_class=sizes.get(split), **kwargs)
        for split in SPLITS
    }
