"""Fetch, verify and unpack the real data set (ML4SCI DeepLense "Common Test I") into data/dataset.

    python download_data.py [--url URL] [--out data] [--sha256 HEX] [--force] [--keep-zip]

Steps, each of which either completes or leaves the previous state untouched:

1. download ``<out>/dataset.zip`` with gdown (a Google Drive URL or id, a mirror, any http(s)
   URL). gdown writes ``<out>/dataset.zip<random>.part`` and renames it only when complete; a
   later run resumes the part file. A ``dataset.zip`` already there is used as it is, so a copy
   brought by hand works without network.
2. check its sha256 (``--sha256``), refuse unsafe entries (absolute paths, ``..``, symlinks)
   and check the layout from the entry names, all before a byte is extracted;
3. extract into a temporary folder next to the destination (same file system), validate the
   tree on disk, and rename it to ``<out>/dataset`` in one step; with ``--force`` the old set is
   moved away only once the new one is valid.

Exit codes: 0 done (or nothing to do), 1 I/O error (e.g. disk full), 2 bad option, 3 the URL
cannot be reached (no network), 4 the server refused or the download broke off, 5 checksum
mismatch, 6 corrupt or truncated archive, 7 unsafe archive entry, 8 wrong layout in the
archive, 9 ``<out>/dataset`` exists but is not a valid real data set (use --force).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import stat
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from lensing.config import CLASSES, DATA_DIR, MANIFEST

DRIVE_FILE_ID = "1ZEyNMEO43u3qhJAwJeBZxFBEYc_pVYZQ"  # dataset.zip of DeepLense Common Test I
DEFAULT_URL = f"https://drive.google.com/uc?id={DRIVE_FILE_ID}"
ZIP_NAME = "dataset.zip"
DATASET_NAME = "dataset"  # <out>/dataset, the folder lensing.config.REAL_DATA_DIR points at
REQUIRED_SPLITS = ("train", "val")
OPTIONAL_SPLITS = ("test",)  # the real set has none; lensing cuts one from train/
NOISE_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # archiver droppings, never data
EXTRACT_PREFIX = f".{DATASET_NAME}.extract-"
OLD_PREFIX = f".{DATASET_NAME}.old-"
REJECTED_SUFFIX = ".rejected"
CHUNK = 1 << 20  # bytes per read when hashing and extracting
SIMULATE_HINT = (
    "Without network, simulate a stand-in in the same format:\n"
    "    python -m lensing simulate --out data/simulated --train 1000 --val 250 --test 250\n"
    "    (or: make simulate)\n"
    "or bring dataset.zip by hand (Google Drive file id {id}) to {zip} and run this again."
)


class DownloadDataError(Exception):
    """An expected failure: main() prints its message (no traceback) and exits with exit_code."""

    exit_code = 1


class UnreachableError(DownloadDataError):
    exit_code = 3


class DownloadFailedError(DownloadDataError):
    exit_code = 4


class ChecksumError(DownloadDataError):
    exit_code = 5


class BadArchiveError(DownloadDataError):
    exit_code = 6


class UnsafeArchiveError(BadArchiveError):
    exit_code = 7


class LayoutError(DownloadDataError):
    exit_code = 8


class ExistingDataError(DownloadDataError):
    exit_code = 9


# --------------------------------------------------------------------------------------------
# download


def download(
    url: str, dest: str | Path, *, quiet: bool = False, retries: int = 3, timeout: float = 60.0
) -> Path:
    """Download ``url`` to the file ``dest`` with gdown, resuming a partial download.

    Parameters
    ----------
    url: str, a Google Drive URL, a bare Drive file id, or any http(s) URL gdown accepts.
    dest: path of the finished file; gdown writes ``<dest><8 random chars>.part`` beside it and
        renames it to ``dest`` only when every byte has arrived.
    quiet: bool, no progress bar.
    retries: int, extra attempts on a dropped connection (each resumes where it stopped).
    timeout: float, seconds to wait for the server (connect, and between bytes).

    Returns ``dest``. An existing ``dest`` is taken as complete and not fetched again.
    Raises UnreachableError (no network, refused connection, DNS failure, timeout) or
    DownloadFailedError (HTTP error, Google Drive refusal, download broken off).
    """
    import gdown
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    url = _normalize_url(url)
    dest = Path(dest)
    if dest.is_file():
        # gdown's own skip comes after its first request, which would fail offline.
        print(f"using the existing {dest} (delete it to download again)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _keep_largest_part(dest)
    kwargs = dict(quiet=quiet, resume=True, retries=retries, timeout=(min(timeout, 30), timeout))
    try:
        try:
            gdown.download(url=url, output=str(dest), **kwargs)
        except DownloadError as exc:
            if "byte range" not in str(exc) or isinstance(exc, FileURLRetrievalError):
                raise
            # The server cannot resume (no Range support): start the download afresh.
            print("the server cannot resume a partial download; starting again from byte 0")
            for part in _part_files(dest):
                part.unlink(missing_ok=True)
            gdown.download(url=url, output=str(dest), **kwargs)
    except FileURLRetrievalError as exc:
        raise DownloadFailedError(
            f"Google Drive did not hand out {url}:\n{exc}\n"
            "Download it in a browser and save it as "
            f"{dest}, then run this again.\n\n" + _hint(dest)
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DownloadFailedError(
            f"the server answered HTTP {status} for {url}; expected the dataset.zip archive"
        ) from None
    except (requests.RequestException, DownloadError, OSError) as exc:
        kept = "".join(
            f"The partial download {p} is kept; the next run resumes it.\n"
            for p in _part_files(dest)
            if p.stat().st_size
        )
        if _is_network_error(exc):
            raise UnreachableError(
                f"could not reach {url} ({_short_reason(exc)}).\n" + kept + _hint(dest)
            ) from None
        if isinstance(exc, DownloadError):
            # gdown's own text ends with advice for its command line; keep its first sentence.
            reason = str(exc).split("\n")[0].rstrip(".")
            raise DownloadFailedError(f"the download of {url} failed: {reason}.\n{kept}") from None
        raise
    if not dest.is_file():
        raise DownloadFailedError(f"gdown reported success but {dest} is missing")
    return dest


def _normalize_url(url: str) -> str:
    """An http(s) URL as it is; a bare Google Drive file id as its download URL."""
    url = url.strip()
    if re.fullmatch(r"[-\w]{20,}", url):
        return f"https://drive.google.com/uc?id={url}"
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(
            f"bad URL {url!r}; expected an http(s) URL (Google Drive, a mirror, a local "
            "server) or a Google Drive file id"
        )
    return url


def _part_files(dest: Path) -> list[Path]:
    # gdown names its partial files <name><8 random characters>.part
    if not dest.parent.is_dir():
        return []
    return [
        p
        for p in dest.parent.iterdir()
        if p.name.startswith(dest.name)
        and p.name.endswith(".part")
        and len(p.name) == len(dest.name) + 8 + len(".part")
    ]


def _keep_largest_part(dest: Path) -> None:
    # gdown refuses to resume when several part files exist (an earlier crash mid-start).
    parts = sorted(_part_files(dest), key=lambda p: p.stat().st_size)
    for part in parts[:-1]:
        part.unlink(missing_ok=True)


def _is_network_error(exc: BaseException) -> bool:
    import requests

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


def _hint(zip_path: Path) -> str:
    return SIMULATE_HINT.format(id=DRIVE_FILE_ID, zip=zip_path)


# --------------------------------------------------------------------------------------------
# checksum


def sha256_file(path: str | Path, *, progress: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    path = Path(path)
    digest = hashlib.sha256()
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc="sha256",
            disable=not progress,
        ) as bar,
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


# --------------------------------------------------------------------------------------------
# layout


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
    """Check that ``root`` is a data set in the DESIGN.md layout and count its files.

    Parameters
    ----------
    root: folder that should hold ``train/`` and ``val/`` (and optionally ``test/``), each with
        one folder per class in lensing.config.CLASSES holding ``*.npy`` files.

    Returns {split: {class: number of .npy files}} for the splits present. Raises LayoutError
    naming the first missing or empty folder. File contents are not read: lensing.data skips
    and lists bad files itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder")
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


# --------------------------------------------------------------------------------------------
# safe extraction


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


def safe_extract(
    zip_path: str | Path, dest_dir: str | Path, *, progress: bool = True
) -> dict[str, dict[str, int]]:
    """Extract the data set in ``zip_path`` so that ``dest_dir`` holds train/ val/ [test/].

    Every entry is checked first: an absolute path, a ``..`` component, a symbolic link or an
    encrypted entry refuses the whole archive (UnsafeArchiveError) before anything is written.
    The tree may sit at the archive's top or under any chain of single folders (``dataset/``);
    ``__MACOSX/``, ``._*`` and ``.DS_Store`` entries are skipped. The files go into a temporary
    folder beside ``dest_dir`` (same file system), are validated, and that folder is renamed to
    ``dest_dir`` (which must not exist). On any failure the temporary folder is removed and
    ``dest_dir`` is not created.

    Returns the counts of validate_layout. Raises BadArchiveError (not a zip, truncated, CRC
    error), UnsafeArchiveError, LayoutError, FileExistsError, or OSError (e.g. disk full).
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    if dest_dir.exists():
        raise FileExistsError(f"{dest_dir} exists; safe_extract only creates a new folder")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise BadArchiveError(_bad_zip_message(zip_path, exc)) from None
    with zf:
        files, _, total = _plan(zf)
        free = shutil.disk_usage(dest_dir.parent).free
        if free < total + (64 << 20):
            raise DownloadDataError(
                f"not enough disk space in {dest_dir.parent}: extracting needs "
                f"{total / 1e9:.2f} GB, {free / 1e9:.2f} GB free"
            )
        # Not mkdtemp: its 0700 mode would make the published data set owner-only.
        tmp = dest_dir.parent / f"{EXTRACT_PREFIX}{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            _extract_files(zf, files, tmp, total, progress)
            counts = validate_layout(tmp)
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


# --------------------------------------------------------------------------------------------
# the command


def _tidy_leftovers(out: Path, dest: Path) -> None:
    """Undo what a killed earlier run left: temporary folders, or a set moved aside by --force."""
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


def _install(zip_path: Path, dest: Path, *, force: bool, progress: bool) -> dict:
    if not dest.exists():
        return safe_extract(zip_path, dest, progress=progress)
    if not force:
        raise FileExistsError(f"{dest} exists; pass force=True to replace it")
    # The new set is complete and valid before the old one moves: dest is never half there.
    staged = dest.parent / f"{EXTRACT_PREFIX}{os.getpid()}-{time.time_ns()}"
    counts = safe_extract(zip_path, staged, progress=progress)
    old = dest.parent / f"{OLD_PREFIX}{os.getpid()}-{time.time_ns()}"
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


def _reject(zip_path: Path) -> Path | None:
    # A bad archive must not be reused by the next run (an existing zip skips the download),
    # but a copy brought by hand should not simply vanish either: keep it under another name.
    if not zip_path.is_file():
        return None
    rejected = zip_path.with_name(zip_path.name + REJECTED_SUFFIX)
    os.replace(zip_path, rejected)
    return rejected


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """A small table: one row per split, one column per class, and the totals."""
    header = f"  {'split':<6}" + "".join(f"{c:>9}" for c in CLASSES) + f"{'total':>9}"
    rows = [header]
    for split, per_class in counts.items():
        cells = "".join(f"{per_class[c]:>9}" for c in CLASSES)
        rows.append(f"  {split:<6}{cells}{sum(per_class.values()):>9}")
    return "\n".join(rows)


def _url_arg(text: str) -> str:
    try:
        return _normalize_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; expected an integer >= 0")
    return int(text)


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; expected seconds > 0")
    return value


def _sha256_arg(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a sha256; expected 64 hex digits")
    return text.strip().lower()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download_data.py",
        description="Download, verify and unpack the real data set into OUT/dataset.",
        epilog="Exit codes: 0 done, 1 I/O error, 2 bad option, 3 no network, 4 download "
        "failed, 5 checksum mismatch, 6 corrupt archive, 7 unsafe archive, 8 wrong layout, "
        "9 OUT/dataset exists but is not valid (use --force).",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        type=_url_arg,
        help="Google Drive URL or file id, mirror, or http(s) URL of dataset.zip "
        "(default: the DeepLense Common Test I file on Google Drive)",
    )
    parser.add_argument(
        "--out", type=Path, default=DATA_DIR, help="folder for dataset.zip and dataset/ (data/)"
    )
    parser.add_argument("--sha256", type=_sha256_arg, help="expected sha256 of dataset.zip")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing OUT/dataset (once the new one is valid)",
    )
    parser.add_argument(
        "--keep-zip", action="store_true", help="keep OUT/dataset.zip after extracting"
    )
    parser.add_argument(
        "--retries", type=_count_arg, default=3, help="extra attempts on a dropped connection (3)"
    )
    parser.add_argument(
        "--timeout", type=_seconds_arg, default=60.0, help="seconds to wait for the server (60)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    dest = out / DATASET_NAME
    zip_path = out / ZIP_NAME
    progress = not args.quiet
    _tidy_leftovers(out, dest)

    if dest.exists():
        if (dest / MANIFEST).exists():
            problem = f"it holds a simulated set ({MANIFEST}); {dest} is reserved for real data"
        else:
            try:
                counts = validate_layout(dest)
            except LayoutError as exc:
                problem = str(exc)
            else:
                problem = None
        if not args.force:
            if problem:
                raise ExistingDataError(
                    f"{dest} exists but is not a valid real data set: {problem}.\n"
                    "Move it away, or run again with --force to replace it."
                )
            print(f"{dest} already holds a valid data set; nothing to do (--force to redo):")
            print(format_counts(counts))
            return 0

    download(args.url, zip_path, quiet=args.quiet, retries=args.retries, timeout=args.timeout)
    try:
        if args.sha256:
            verify_sha256(zip_path, args.sha256, progress=progress)
            print(f"sha256 OK: {args.sha256}")
        else:
            print(f"sha256 of {zip_path}: {sha256_file(zip_path, progress=progress)}")
        counts = _install(zip_path, dest, force=args.force, progress=progress)
    except (ChecksumError, BadArchiveError, LayoutError) as exc:
        rejected = _reject(zip_path)
        if rejected:
            exc.args = (f"{exc}\nMoved the archive aside to {rejected}.",)
        raise

    if not args.keep_zip:
        zip_path.unlink(missing_ok=True)
    print(f"{dest} is ready:")
    print(format_counts(counts))
    if "test" not in counts:
        print("  (no test/ split: lensing cuts a fixed stratified test share from train/)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (see the module docstring)."""
    args = get_args_parser().parse_args(argv)
    try:
        return run(args)
    except DownloadDataError as exc:
        print(f"error: {str(exc).rstrip()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted; nothing was half-installed, and a partial download resumes next time",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
