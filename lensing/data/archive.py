"""The local side of getting the real set: check its zip archive and unpack it safely.

sha256 (:func:`verify_sha256`); the layout lensing.data.dataset reads (:func:`validate_layout`);
extraction that checks every entry name (no absolute path, ``..``, symlink or encryption) and
the layout before a byte is written, into a staging folder renamed into place in one step
(:func:`safe_extract`); replacing a set only once the new one is valid, and undoing what a
killed run left (:func:`install_archive`, :func:`tidy_leftovers`). Each expected failure is a
:class:`DownloadDataError`; the download command (``lensing.cli.download``) maps each kind
to its exit code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from lensing.core.constants import CLASSES, REAL_DATA_DIR

DATASET_NAME = REAL_DATA_DIR.name  # the folder the real set is unpacked into, beside the zip
REQUIRED_SPLITS = ("train", "val")
OPTIONAL_SPLITS = ("test",)  # the real set has none; lensing cuts one from train/
NOISE_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # archiver droppings, never data
EXTRACT_PREFIX = f".{DATASET_NAME}.extract-"
OLD_PREFIX = f".{DATASET_NAME}.old-"
CHUNK = 1 << 20  # bytes per read when hashing and extracting
DISK_MARGIN = 64 << 20  # bytes kept free beyond the archive's unpacked size

# Called with the staging folder once it is complete and valid, just before it is renamed into
# place: whatever it writes there appears together with the data.
Finisher = Callable[[Path], None]


class DownloadDataError(Exception):
    """An expected failure: the command prints its message (no traceback) and exits with the
    code ``lensing.cli.download`` gives its kind."""


class ChecksumError(DownloadDataError):
    """The archive's sha256 is not the expected one."""


class BadArchiveError(DownloadDataError):
    """The file is not a readable zip archive."""


class UnsafeArchiveError(BadArchiveError):
    """An entry would land outside the target (absolute path, ``..``, symlink, device)."""


class LayoutError(DownloadDataError):
    """The archive does not hold the data set's folders."""


def sha256_file(path: str | Path, *, progress: bool = False) -> str:
    """Hex sha256 (64 lower-case digits) of the file at ``path``, read in 1 MiB blocks.

    progress: bool, show a tqdm bar in bytes.
    """
    path = Path(path)
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(total=size, unit="B", unit_scale=True, desc="sha256", disable=not progress) as bar,
    ):
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, *, progress: bool = False) -> str:
    """Check that the sha256 of ``path`` is ``expected`` (64 hex digits, any case).

    Returns the digest; raises ChecksumError when it differs, ValueError on a malformed hex.
    """
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ValueError(f"bad sha256 {expected!r}; expected 64 hexadecimal digits")
    actual = sha256_file(path, progress=progress)
    if actual != expected:
        raise ChecksumError(
            f"sha256 of {path} is {actual}; expected {expected}. "
            "The file is damaged or not the expected archive."
        )
    return actual


def _empty_counts() -> dict[str, dict[str, int]]:
    return {split: dict.fromkeys(CLASSES, 0) for split in REQUIRED_SPLITS + OPTIONAL_SPLITS}


def _check_counts(found: dict[str, dict[str, int]], present: set[str], where: str) -> dict:
    """Turn raw .npy counts into the validated counts, or raise LayoutError naming the gap."""
    expected = (
        f"expected {'/, '.join(REQUIRED_SPLITS)}/ (and optionally test/), each holding "
        f"{'/, '.join(CLASSES)}/ folders of .npy files"
    )
    counts = {}
    for split in REQUIRED_SPLITS + OPTIONAL_SPLITS:
        if split not in present:
            if split in REQUIRED_SPLITS:
                raise LayoutError(f"{where} has no {split}/ folder; {expected}")
            continue
        for name in CLASSES:
            if found[split][name] == 0:
                raise LayoutError(
                    f"{where}: {split}/{name}/ is missing or holds no .npy file; {expected}"
                )
        counts[split] = dict(found[split])
    return counts


def validate_layout(root: str | Path) -> dict[str, dict[str, int]]:
    """Check that ``root`` is a data set in the layout lensing.data.dataset reads, and count its
    files.

    Parameters
    ----------
    root: folder that should hold ``train/`` and ``val/`` (and optionally ``test/``), each with
        one folder per class in lensing.core.constants.CLASSES holding ``*.npy`` files. Other
        files at the top (a provenance marker, a README) are allowed and ignored.

    Returns {split: {class: number of .npy files}} for the splits present. Raises LayoutError
    naming the first missing or empty folder. File contents are not read:
    lensing.data.dataset skips and lists bad files itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; expected a data set folder")
    found = _empty_counts()
    present = set()
    for split in found:
        if not (root / split).is_dir():
            continue
        present.add(split)
        for name in CLASSES:
            folder = root / split / name
            if folder.is_dir():
                found[split][name] = sum(
                    1
                    for p in folder.iterdir()
                    if p.suffix == ".npy" and p.is_file() and not p.name.startswith("._")
                )
    return _check_counts(found, present, str(root))


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """A small table: one row per split, one column per class, and the totals."""
    header = f"  {'split':<6}" + "".join(f"{c:>9}" for c in CLASSES) + f"{'total':>9}"
    rows = [header]
    for split, per_class in counts.items():
        cells = "".join(f"{per_class[c]:>9}" for c in CLASSES)
        rows.append(f"  {split:<6}{cells}{sum(per_class.values()):>9}")
    return "\n".join(rows)


def _parts(name: str) -> list[str]:
    # Backslashes count as separators too: an archive made on Windows may use them.
    return [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]


def _is_noise(parts: list[str]) -> bool:
    return (
        "__MACOSX" in parts
        or (bool(parts) and parts[-1] in NOISE_NAMES)
        or (bool(parts) and parts[-1].startswith("._"))  # AppleDouble resource forks
    )


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component (would write outside the destination)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted (cannot be read without a password)"
    return None


def _find_prefix(entries: list[tuple[zipfile.ZipInfo, list[str]]]) -> tuple[str, ...]:
    """The folder path inside the archive that holds train/ and val/: (), ("dataset",), ..."""
    prefix: tuple[str, ...] = ()
    for _ in range(8):
        depth = len(prefix)
        folders = {
            parts[depth]
            for info, parts in entries
            if tuple(parts[:depth]) == prefix
            and (len(parts) > depth + 1 or (len(parts) == depth + 1 and info.is_dir()))
        }
        if set(REQUIRED_SPLITS) & folders or len(folders) != 1:
            break
        prefix += (folders.pop(),)
    return prefix


def _plan(zf: zipfile.ZipFile) -> tuple[list[tuple[zipfile.ZipInfo, list[str]]], dict, int]:
    """Check every entry before extraction; return (entries to write, counts, bytes to write)."""
    entries = []
    for info in zf.infolist():
        reason = _unsafe_reason(info)
        if reason:
            raise UnsafeArchiveError(
                f"refusing the archive: entry {info.filename!r} {reason}; nothing was extracted"
            )
        parts = _parts(info.filename)
        if parts and not _is_noise(parts):
            entries.append((info, parts))
    prefix = _find_prefix(entries)
    files = [
        (info, parts[len(prefix) :])
        for info, parts in entries
        if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix) and not info.is_dir()
    ]
    found = _empty_counts()
    present = set()
    for _, rel in files:
        if rel[0] in found:
            present.add(rel[0])
            if len(rel) == 3 and rel[1] in CLASSES and rel[2].endswith(".npy"):
                found[rel[0]][rel[1]] += 1
    where = "the archive" + (f" (under {'/'.join(prefix)}/)" if prefix else "")
    counts = _check_counts(found, present, where)
    return files, counts, sum(info.file_size for info, _ in files)


def _staging_path(parent: Path, prefix: str) -> Path:
    return parent / f"{prefix}{os.getpid()}-{time.time_ns()}"


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise DownloadDataError(
            f"not enough disk space in {folder}: extracting needs {needed / 1e9:.2f} GB, "
            f"got {free / 1e9:.2f} GB free"
        )


def safe_extract(
    zip_path: str | Path,
    dest_dir: str | Path,
    *,
    progress: bool = True,
    finish: Finisher | None = None,
) -> dict[str, dict[str, int]]:
    """Extract the data set in ``zip_path`` so that ``dest_dir`` holds train/ val/ [test/].

    zip_path: the archive; the tree may sit at its top or under a chain of single folders
        (``dataset/``). ``__MACOSX/``, ``._*`` and ``.DS_Store`` entries are skipped.
    dest_dir: the folder to create; it must not exist.
    progress: bool, show a tqdm bar in bytes.
    finish: called with the staging folder once it is extracted and valid, before the rename,
        so that what it writes (a provenance marker) appears together with the data.

    An unsafe entry refuses the whole archive before anything is written. The staging folder
    sits beside ``dest_dir`` (same file system); on any failure it is removed and ``dest_dir``
    is not created. Returns validate_layout's counts. Raises BadArchiveError (not a zip,
    truncated, CRC error), UnsafeArchiveError, LayoutError, FileExistsError, DownloadDataError
    (disk full) or OSError.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    if dest_dir.exists():
        raise FileExistsError(f"{dest_dir} exists; expected a new folder for safe_extract")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise BadArchiveError(_bad_zip_message(zip_path, exc)) from None
    with zf:
        files, _, total = _plan(zf)
        _check_space(dest_dir.parent, total)
        # Not mkdtemp: its 0700 mode would make the published data set owner-only.
        tmp = _staging_path(dest_dir.parent, EXTRACT_PREFIX)
        tmp.mkdir()
        try:
            _extract_files(zf, files, tmp, total, progress)
            counts = validate_layout(tmp)
            if finish is not None:
                finish(tmp)
            # The whole tree appears at once; files inside it need no atomic writes of their own.
            os.replace(tmp, dest_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return counts


def _extract_files(
    zf: zipfile.ZipFile,
    files: Iterable[tuple[zipfile.ZipInfo, list[str]]],
    root: Path,
    total: int,
    progress: bool,
) -> None:
    base = root.resolve()
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="extracting", disable=not progress
    ) as bar:
        for info, rel in files:
            target = root.joinpath(*rel)
            if not target.resolve().is_relative_to(base):  # _plan refused these; belt and braces
                raise UnsafeArchiveError(f"entry {info.filename!r} points outside {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    for block in iter(lambda src=src: src.read(CHUNK), b""):
                        dst.write(block)
                        bar.update(len(block))
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise BadArchiveError(
                    f"the archive is corrupt at entry {info.filename!r} ({exc}); download it again"
                ) from None


def _bad_zip_message(zip_path: Path, exc: Exception) -> str:
    with open(zip_path, "rb") as f:
        head = f.read(64)
    looks_html = head.lstrip().lower().startswith((b"<!doctype", b"<html"))
    what = "an HTML page, not a zip archive" if looks_html else f"not a readable zip ({exc})"
    return (
        f"{zip_path} is {what}: the download is truncated or corrupt, or the URL does not "
        "serve dataset.zip"
    )


def tidy_leftovers(out: Path, dest: Path) -> None:
    """Undo what a killed earlier run left in ``out``: staging folders, or a set moved aside.

    out: the folder holding ``dest``; dest: the data set folder. A valid set moved aside by an
    interrupted ``install_archive(force=True)`` is moved back when ``dest`` is missing.
    """
    if not out.is_dir():
        return
    for tmp in out.glob(EXTRACT_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(out.glob(OLD_PREFIX + "*")):
        if not dest.exists():
            try:
                validate_layout(old)
            except LayoutError:
                pass
            else:
                os.replace(old, dest)
                print(f"restored {dest} from an interrupted --force run")
                continue
        shutil.rmtree(old, ignore_errors=True)


def install_archive(
    zip_path: Path, dest: Path, *, force: bool, progress: bool, finish: Finisher | None = None
) -> dict[str, dict[str, int]]:
    """safe_extract into ``dest``; with ``force``, replace an existing ``dest``.

    The new set is extracted and validated beside the old one first, so a bad archive leaves
    the old set in place and ``dest`` is never half there. Returns validate_layout's counts;
    raises FileExistsError when ``dest`` exists and ``force`` is False, else as safe_extract.
    """
    if not dest.exists():
        return safe_extract(zip_path, dest, progress=progress, finish=finish)
    if not force:
        raise FileExistsError(f"{dest} exists; expected force=True to replace it")
    staged = _staging_path(dest.parent, EXTRACT_PREFIX)
    counts = safe_extract(zip_path, staged, progress=progress, finish=finish)
    old = _staging_path(dest.parent, OLD_PREFIX)
    try:
        os.replace(dest, old)
        try:
            os.replace(staged, dest)
        except BaseException:
            os.replace(old, dest)
            raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
    return counts
