"""Which files each split holds: discovery, the test share held out of train, and a stratified
subset for runs on a budget.

The real set has only ``train/`` and ``val/``: :func:`split_off_test_set` holds out a stratified
share of train once and writes it down, so every re-run sees the same test set.
:func:`stratified_subset` keeps a fixed number of images per class, drawn with a seed, so a
quick run on a large set sees every class equally and the same images each time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lensing.core.atomic import atomic_write_json
from lensing.core.constants import CLASSES
from lensing.data.readers.checks import stat_problem
from lensing.data.readers.image import has_accepted_suffix, natural_key

TEST_SPLIT_FILE = "test_split.json"  # the written-down test split, when the set has no test/
Files = list[tuple[Path, int]]  # (path, class index) in CLASSES order


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
        test = [(p, y) for p, y in train if relative_name(root, p) in chosen]
        train = [(p, y) for p, y in train if relative_name(root, p) not in chosen]
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
        files = [relative_name(root, p) for p, y in train if y == label]
        n_test = int(round(fraction * len(files))) if len(files) > 1 else 0
        chosen.update(files[i] for i in rng.permutation(len(files))[:n_test])
    return chosen


def relative_name(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, with forward slashes (how records and cache keys name it)."""
    return path.relative_to(root).as_posix()


def stratified_subset(files: Files, per_class: int, seed: int = 0) -> Files:
    """At most ``per_class`` files of each class, drawn with ``seed``, in their original order.

    The draw for a class depends only on its own files and the seed, so the same call keeps the
    same files, and a larger ``per_class`` keeps a superset of a smaller one.
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise ValueError(f"per_class {per_class!r}; expected an integer >= 1")
    kept: set[int] = set()
    for label in range(len(CLASSES)):
        members = [i for i, (_, y) in enumerate(files) if y == label]
        order = np.random.default_rng([seed, label]).permutation(len(members))
        kept.update(members[j] for j in order[:per_class])
    return [item for i, item in enumerate(files) if i in kept]
