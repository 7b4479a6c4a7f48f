"""``python -m lensing download`` (and ``python download_data.py``): the real data set.

``python -m lensing download [--url URL] [--out data] [--sha256 HEX] [--force] [--keep-zip]
[--retries N] [--timeout S] [--quiet]`` fetches, verifies and unpacks the ML4SCI DeepLense
"Common Test I" set into ``<out>/dataset``; the steps are :mod:`lensing.data.download`'s.

Exit codes: the shared ones of ``lensing.cli.options`` (0 done or nothing to do, 1 an I/O
error such as a full disk, 2 a bad option, 130 interrupted), extended by download's own,
3-9, one per failure a user acts on differently (scripts rely on them):

- 3 ``EXIT_NO_NETWORK``: the server could not be reached;
- 4 ``EXIT_DOWNLOAD_FAILED``: the server refused, or the download broke off;
- 5 ``EXIT_CHECKSUM``: the archive's sha256 is not the one given;
- 6 ``EXIT_CORRUPT``: the archive is corrupt;
- 7 ``EXIT_UNSAFE``: an archive entry is unsafe (absolute path, ``..``, symlink, encrypted);
- 8 ``EXIT_LAYOUT``: the archive's folders are not the data set's layout;
- 9 ``EXIT_EXISTING``: ``<out>/dataset`` exists but is not a valid real set (use --force).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from lensing.cli.options import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from lensing.core.constants import DATA_DIR
from lensing.data import archive
from lensing.data.download import (
    DEFAULT_URL,
    DownloadFailedError,
    ExistingDataError,
    UnreachableError,
    install_dataset,
    normalize_url,
)

EXIT_NO_NETWORK = 3
EXIT_DOWNLOAD_FAILED = 4
EXIT_CHECKSUM = 5
EXIT_CORRUPT = 6
EXIT_UNSAFE = 7
EXIT_LAYOUT = 8
EXIT_EXISTING = 9
# Each expected failure's exit code; a subclass not listed takes its nearest listed base's.
ERROR_EXIT_CODES: dict[type[archive.DownloadDataError], int] = {
    UnreachableError: EXIT_NO_NETWORK,
    DownloadFailedError: EXIT_DOWNLOAD_FAILED,
    archive.ChecksumError: EXIT_CHECKSUM,
    archive.BadArchiveError: EXIT_CORRUPT,
    archive.UnsafeArchiveError: EXIT_UNSAFE,
    archive.LayoutError: EXIT_LAYOUT,
    ExistingDataError: EXIT_EXISTING,
    archive.DownloadDataError: EXIT_FAILED,
}
EPILOG = (
    "Exit codes: 0 done, 1 I/O error, 2 bad option, 3 no network, 4 download failed, "
    "5 checksum mismatch, 6 corrupt archive, 7 unsafe archive, 8 wrong layout, 9 OUT/dataset "
    "exists but is not valid (use --force), 130 interrupted."
)
URL_HELP = "Google Drive URL or id, or http(s) URL of dataset.zip (default: Common Test I)"


def exit_code(error: archive.DownloadDataError) -> int:
    """The exit code of an expected failure (``ERROR_EXIT_CODES``)."""
    for kind in type(error).__mro__:
        if kind in ERROR_EXIT_CODES:
            return ERROR_EXIT_CODES[kind]
    return EXIT_FAILED


def _option(parse: Callable[[str], object]) -> Callable[[str], object]:
    # An argparse type: parse's ValueError becomes the usage error (exit 2) with its message.
    def check(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a count; expected an integer >= 0")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} is not a duration; expected seconds > 0")
    return value


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text.strip()):
        raise ValueError(f"{text!r} is not a sha256; expected 64 hex digits")
    return text.strip().lower()


def build_parser(prog: str = "python -m lensing download") -> argparse.ArgumentParser:
    """The parser of the download command (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download, verify and unpack the real data set into OUT/dataset.",
        epilog=EPILOG,
    )
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, type=_option(normalize_url), help=URL_HELP)
    add("--out", type=Path, default=DATA_DIR, help="folder for dataset.zip and dataset/ (data/)")
    add("--sha256", type=_option(_sha256), help="expected sha256 of dataset.zip")
    add("--force", action="store_true", help="replace OUT/dataset (once the new one is valid)")
    add("--keep-zip", action="store_true", help="keep OUT/dataset.zip after extracting")
    add("--retries", type=_option(_count), default=3, help="retries on a dropped connection (3)")
    add("--timeout", type=_option(_seconds), default=60.0, help="seconds to wait for a server")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def handle(args: argparse.Namespace) -> int:
    """Download and install with the parsed options; returns the exit code (module
    docstring): an expected failure prints its message, never a traceback."""
    try:
        install_dataset(
            args.url,
            args.out,
            sha256=args.sha256,
            force=args.force,
            keep_zip=args.keep_zip,
            retries=args.retries,
            timeout=args.timeout,
            quiet=args.quiet,
        )
    except archive.DownloadDataError as exc:
        print(f"error: {str(exc).rstrip()}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; nothing is half-installed; the download resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python download_data.py``: the same command under the script's name.

    argv: list of str, the options (None: sys.argv[1:]); a bad option raises SystemExit(2).
    """
    return handle(build_parser(prog="download_data.py").parse_args(argv))
