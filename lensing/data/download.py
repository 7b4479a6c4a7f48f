"""Fetch, verify and unpack the real data set (ML4SCI DeepLense "Common Test I") into data/dataset.

Its command line, ``python download_data.py`` or ``python -m lensing download`` (options and
exit codes), is :mod:`lensing.cli.download`; :func:`install_dataset` is the whole job.

gdown fetches ``<out>/dataset.zip`` (a Google Drive URL or id, a mirror, any http(s) URL)
through a ``.part`` file that a later run resumes; a ``dataset.zip`` already there is used as it
is, so a copy brought by hand works offline. lensing.data.archive then checks the sha256, refuses
unsafe entries and a wrong layout before a byte is extracted, and unpacks into a staging folder
that gets the provenance marker ``source.json`` and is renamed to ``<out>/dataset`` in one step;
``force`` moves the old set away only once the new one is valid. Each expected failure is a
:class:`~lensing.data.archive.DownloadDataError`; the command maps each kind to an exit code.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from lensing.core.atomic import atomic_write_json
from lensing.core.constants import DATA_DIR, MANIFEST
from lensing.data import archive
from lensing.data.archive import DATASET_NAME, DownloadDataError

DRIVE_FILE_ID = "1ZEyNMEO43u3qhJAwJeBZxFBEYc_pVYZQ"  # dataset.zip of DeepLense Common Test I
DEFAULT_URL = f"https://drive.google.com/uc?id={DRIVE_FILE_ID}"
ZIP_NAME = "dataset.zip"
REJECTED_SUFFIX = ".rejected"
SOURCE_MARKER = "source.json"  # at the top of an unpacked set: where it came from
SOURCE_NAME = "deeplense-test-i"  # the marker's "source", the name results give the real set
SIMULATE_HINT = (
    "Without network, simulate a stand-in in the same format:\n"
    "    python -m lensing simulate --out data/simulated --train 1000 --val 250 --test 250\n"
    "    (or: make simulate)\n"
    "or bring dataset.zip by hand (Google Drive file id {id}) to {zip} and run this again."
)
# Query parameters that may carry an access secret (signed mirror URLs, Drive resource keys);
# they are dropped before a URL is written into the marker.
SECRET_QUERY = re.compile(r"(?i)token|key|secret|sig|pass|pwd|auth|cred|session|^x-(amz|goog)-")
MARKER_MAX_BYTES = 1 << 16  # a marker is a few hundred bytes; anything larger is not one


class UnreachableError(DownloadDataError):
    """No network, a refused connection, a DNS failure or a timeout."""


class DownloadFailedError(DownloadDataError):
    """The server answered but did not hand out the archive, or the download broke off."""


class ExistingDataError(DownloadDataError):
    """``<out>/dataset`` exists but is not a valid real data set (replace it with force)."""


def download(
    url: str, dest: str | Path, *, quiet: bool = False, retries: int = 3, timeout: float = 60.0
) -> Path:
    """Download ``url`` to the file ``dest`` with gdown, resuming a partial download.

    url: str, a Google Drive URL, a bare Drive file id, or any http(s) URL gdown accepts.
    dest: the finished file; gdown writes ``<dest><8 random chars>.part`` beside it and renames
        it only when every byte has arrived. An existing ``dest`` is returned as it is.
    quiet: no progress bar; retries: int, extra attempts on a dropped connection (each resumes);
    timeout: float, seconds to wait for the server (connect, and between bytes).

    Returns ``dest``. Raises UnreachableError (no network, refused, DNS failure, timeout) or
    DownloadFailedError (HTTP error, Google Drive refusal, download broken off).
    """
    import requests
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    url = normalize_url(url)
    dest = Path(dest)
    if dest.is_file():
        # gdown's own skip comes after its first request, which would fail offline.
        print(f"using the existing {dest} (delete it to download again)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _keep_largest_part(dest)
    kwargs = dict(quiet=quiet, resume=True, retries=retries, timeout=(min(timeout, 30), timeout))
    try:
        _gdown_resuming(url, dest, kwargs)
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
            why = f"could not reach {url} ({_short_reason(exc)}).\n"
            raise UnreachableError(why + kept + _hint(dest)) from None
        if isinstance(exc, DownloadError):
            # gdown's own text ends with advice for its command line; keep its first sentence.
            reason = str(exc).split("\n")[0].rstrip(".")
            raise DownloadFailedError(f"the download of {url} failed: {reason}.\n{kept}") from None
        raise
    if not dest.is_file():
        raise DownloadFailedError(f"gdown reported success but {dest} is missing; expected it")
    return dest


def _gdown_resuming(url: str, dest: Path, kwargs: dict) -> None:
    """gdown.download, started afresh once when the server cannot resume the part file."""
    import gdown
    from gdown.exceptions import DownloadError, FileURLRetrievalError

    try:
        gdown.download(url=url, output=str(dest), **kwargs)
    except DownloadError as exc:
        if "byte range" not in str(exc) or isinstance(exc, FileURLRetrievalError):
            raise
        print("the server cannot resume a partial download; starting again from byte 0")
        for part in _part_files(dest):
            part.unlink(missing_ok=True)
        gdown.download(url=url, output=str(dest), **kwargs)


def normalize_url(url: str) -> str:
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


def public_url(url: str) -> str:
    """``url`` without credentials: no ``user:password@``, no secret-looking query parameter.

    The marker travels with results, so nothing that grants access may stay in it. Other query
    parameters (a Drive ``id``) are kept byte for byte; the fragment is dropped.
    """
    parts = urlsplit(url)
    query = "&".join(
        item
        for item in parts.query.split("&")
        if item and not SECRET_QUERY.search(unquote(item.split("=", 1)[0]))
    )
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def write_source_marker(root: str | Path, archive_sha256: str, url: str) -> Path:
    """Write ``<root>/source.json``: where the set in ``root`` came from, and when.

    root: the data set folder (next to train/ and val/); archive_sha256: hex sha256 of the zip
    it was unpacked from; url: where it came from (credentials removed). Returns the path.
    """
    marker = {
        "source": SOURCE_NAME,
        "archive_sha256": archive_sha256.lower(),
        "url": public_url(url),
        "unpacked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = atomic_write_json(Path(root) / SOURCE_MARKER, marker)
    # The atomic helper's temporary file is owner-only; others must read it like the data.
    os.chmod(path, Path(root).stat().st_mode & 0o666)
    return path


def read_source_marker(data_dir: str | Path) -> dict | None:
    """The provenance marker of the set in ``data_dir``, or None; never raises.

    data_dir: the data set folder (next to train/ and val/). Returns the marker's dict, with
    non-empty str values for "source", "archive_sha256" (64 hex digits), "url" and
    "unpacked_at"; None when the file is absent, unreadable, not such a JSON object.
    """
    try:
        with open(Path(data_dir) / SOURCE_MARKER, "rb") as f:
            raw = f.read(MARKER_MAX_BYTES + 1)
        marker = json.loads(raw.decode("utf-8")) if len(raw) <= MARKER_MAX_BYTES else None
    except (OSError, ValueError, TypeError, RecursionError):
        return None
    keys = ("source", "archive_sha256", "url", "unpacked_at")
    if not isinstance(marker, dict) or not all(isinstance(marker.get(k), str) for k in keys):
        return None
    valid = all(marker[k] for k in keys) and re.fullmatch(r"[0-9a-f]{64}", marker[keys[1]])
    return marker if valid else None


def _reject(zip_path: Path) -> Path | None:
    # A bad archive must not be reused by the next run (an existing zip skips the download),
    # but a copy brought by hand should not simply vanish either: keep it under another name.
    if not zip_path.is_file():
        return None
    rejected = zip_path.with_name(zip_path.name + REJECTED_SUFFIX)
    os.replace(zip_path, rejected)
    return rejected


def _existing_counts(dest: Path) -> dict[str, dict[str, int]]:
    """validate_layout of a set already in ``dest``; ExistingDataError when it is no real set."""
    if (dest / MANIFEST).exists():
        problem = f"it holds a simulated set ({MANIFEST}); {dest} is reserved for real data"
    else:
        try:
            return archive.validate_layout(dest)
        except archive.LayoutError as exc:
            problem = str(exc)
    raise ExistingDataError(
        f"{dest} exists but is not a valid real data set: {problem}.\n"
        "Move it away, or run again with --force to replace it."
    )


def _verify_and_install(
    zip_path: Path, dest: Path, url: str, sha256: str | None, force: bool, progress: bool
) -> dict:
    """Hash, check and unpack ``zip_path`` into ``dest`` with its marker; reject a bad zip."""
    try:
        if sha256:
            digest = archive.verify_sha256(zip_path, sha256, progress=progress)
            print(f"sha256 OK: {digest}")
        else:
            digest = archive.sha256_file(zip_path, progress=progress)
            print(f"sha256 of {zip_path}: {digest}")
        mark = partial(write_source_marker, archive_sha256=digest, url=url)
        return archive.install_archive(zip_path, dest, force=force, progress=progress, finish=mark)
    except (archive.ChecksumError, archive.BadArchiveError, archive.LayoutError) as exc:
        rejected = _reject(zip_path)
        if rejected:
            exc.args = (f"{exc}\nMoved the archive aside to {rejected}.",)
        raise


def install_dataset(
    url: str = DEFAULT_URL,
    out: str | Path = DATA_DIR,
    *,
    sha256: str | None = None,
    force: bool = False,
    keep_zip: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    quiet: bool = False,
) -> None:
    """Download ``url`` to ``<out>/dataset.zip``, verify it and unpack it into
    ``<out>/dataset`` with its provenance marker; nothing to do when a valid set is there.

    url: as :func:`download` takes it; sha256: the archive's expected hex digest (None: only
    printed); force: replace ``<out>/dataset`` once the new set is valid; keep_zip: leave the
    archive beside it; retries, timeout, quiet: as :func:`download` takes them.
    Raises a DownloadDataError for each expected failure, OSError for an I/O error.
    """
    out = Path(out)
    dest, zip_path = out / DATASET_NAME, out / ZIP_NAME
    archive.tidy_leftovers(out, dest)
    if dest.exists() and not force:
        counts = _existing_counts(dest)
        print(f"{dest} already holds a valid data set; nothing to do (--force to redo):")
        print(archive.format_counts(counts))
        if read_source_marker(dest) is None:
            print(f"  (no {SOURCE_MARKER} provenance marker; --force unpacks it again with one)")
        return

    download(url, zip_path, quiet=quiet, retries=retries, timeout=timeout)
    counts = _verify_and_install(zip_path, dest, url, sha256, force, progress=not quiet)
    if not keep_zip:
        zip_path.unlink(missing_ok=True)
    print(f"{dest} is ready (provenance in {dest / SOURCE_MARKER}):")
    print(archive.format_counts(counts))
    if "test" not in counts:
        print("  (no test/ split: lensing cuts a fixed stratified test share from train/)")
