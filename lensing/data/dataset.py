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

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lensing.atomic import atomic_write_json
from lensing.constants import CLASSES, MANIFEST, SPLITS
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
from lensing.data.readers.checks import ImageError, stat_problem, unstatable_reason
from lensing.data.readers.image import (
    file_fingerprint,
    has_accepted_suffix,
    natural_key,
    read_image,
)
from lensing.progress import bar

TEST_SPLIT_FILE = "test_split.json"  # the written-down test split, when the set has no test/
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


def find_split_files(root: str | Path, split: str) -> list[tuple[Path, int]]:
    """Every entry of ``<root>/<split>/<class>/`` with an image's name, with its class index.

    Classes in ``CLASSES`` order, each folder's entries in natural order (``2.npy`` before
    ``10.npy``); names starting with "." are passed over, subfolders are not searched. Entries
    are listed, not judged: a FIFO, folder or dangling symlink named ``x.npy`` is in the list
    and is skipped with its reason when the split is read. Raises FileNotFoundError naming the
    split or class folder when it is missing, OSError naming a class folder that cannot be
    listed.
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
        try:
            names = os.listdir(class_dir)
        except OSError as err:
            raise OSError(
                f"cannot list the class folder {class_dir}: {stat_problem(class_dir, err, 'list')}"
            ) from None
        names = [n for n in names if not n.startswith(".") and has_accepted_suffix(n)]
        found += [(class_dir / n, label) for n in sorted(names, key=natural_key)]
    return found


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
            chosen = _read_test_record(record_path)
        else:
            if not 0 < test_fraction < 1:
                raise ValueError(f"test_fraction {test_fraction!r}; expected 0 < share < 1")
            chosen = _draw_test_files(root, train, test_fraction, seed)
            atomic_write_json(
                record_path,
                {
                    "seed": seed,
                    "test_fraction": test_fraction,
                    "test": sorted(chosen, key=lambda name: (natural_key(name), name)),
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


def _read_test_record(path: Path) -> set[str]:
    """The test files named in a ``test_split.json``; ValueError naming the file if it is not
    such a record (it is never redrawn silently: that would move files between the splits)."""
    try:
        record = json.loads(path.read_bytes())
        chosen = record["test"]
        if not (isinstance(chosen, list) and all(isinstance(c, str) for c in chosen)):
            raise TypeError("'test' is not a list of paths")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"unreadable test split record {path} ({type(err).__name__}: {err}); expected the "
            "JSON split_off_test_set writes, with a 'test' list of paths. Delete it to draw a "
            "new test split (earlier results then no longer compare)"
        ) from None
    return set(chosen)


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
        (30,000 images take 2.7 GB). With ``cache``, it maps the cache file copy-on-write
        (pages are read as they are used and shared between processes; an in-place write
        changes this process's copy only). ``False`` reads each file when it is asked for.
    cache: write and reuse the consolidated cache under ``<root>/.cache/``.
    progress: show a progress bar while reading files.
    balance_tolerance: warn when a class count is off the mean by more than this share.
    test_fraction, seed: passed to :func:`split_off_test_set`.

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
                lines.append(f"{_relative(self.root, path)}|{label}|-")
            else:
                lines.append(
                    f"{_relative(self.root, path)}|{label}|{fingerprint[0]}|{fingerprint[1]}"
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


def load_splits(root: str | Path, **kwargs) -> dict[str, LensingDataset]:
    """The train, val and test datasets of ``root``; keyword arguments go to LensingDataset."""
    return {split: LensingDataset(root, split, **kwargs) for split in SPLITS}
