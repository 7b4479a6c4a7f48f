"""Reading one image file into a normalized float32 array, refusing anything unsafe or unusable.

:func:`read_image` takes a ``.npy`` or a FITS file (``.fits``, ``.fit``, ``.fits.gz``) and
returns an :class:`ImageRead`: the image min-max normalized to [0, 1] and notes on anything it
changed. Every file it cannot use raises :class:`ImageError` with a reason; nothing in a file
can make it run code, block, crash the interpreter or claim unbounded memory:

- only regular files are opened, and only after ``os.stat`` says so (a FIFO never blocks);
- no file over :data:`lensing.data.readers.checks.MAX_FILE_BYTES` is read, and a header's
  claimed data size is checked against the bytes the file really holds before any array is built
  (:mod:`lensing.data.readers.npy`, :mod:`lensing.data.readers.fits`);
- object arrays (DeepLenseSim's ``[image, axion_mass]``) go through an unpickler that rebuilds
  NumPy arrays and numbers and nothing else (:mod:`lensing.data.readers.npy`).

:func:`find_images` lists the accepted files under folders; :func:`file_fingerprint` gives a
file's (size, mtime) for caches; :func:`natural_key` sorts names as people count. Importing
this module loads NumPy only; astropy is loaded when the first FITS file is read.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensing.core.constants import IMAGE_SIZE
from lensing.data.readers.checks import (
    ImageError,
    image_plane,
    kind_of,
    read_file_bytes,
    stat_problem,
)
from lensing.data.readers.fits import read_fits_image
from lensing.data.readers.npy import read_npy

__all__ = [
    "ACCEPTED_SUFFIXES",
    "ImageError",
    "NOTE_FILLED",
    "NOTE_RESAMPLED",
    "ImageRead",
    "file_fingerprint",
    "find_images",
    "has_accepted_suffix",
    "natural_key",
    "read_image",
    "resample",
    "stat_problem",
]

NPY_SUFFIXES = (".npy",)
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
ACCEPTED_SUFFIXES = NPY_SUFFIXES + FITS_SUFFIXES  # matched case-insensitively
# The first word of each kind of note in ImageRead.notes, so callers can count them.
NOTE_FILLED, NOTE_RESAMPLED = "filled", "resampled"


@dataclass(frozen=True)
class ImageRead:
    """One image as read by :func:`read_image`.

    array: float32 ndarray (size, size), min-max normalized to [0, 1] (pixel units: none).
    notes: what was done to the file's pixels beyond normalizing, one sentence each, starting
        with :data:`NOTE_FILLED` (non-finite pixels replaced) or :data:`NOTE_RESAMPLED`;
        empty when the file was used as it is.
    """

    array: np.ndarray
    notes: tuple[str, ...] = ()


def read_image(
    path: str | os.PathLike,
    *,
    hdu: int | str | None = None,
    fill_nonfinite: bool = False,
    resize: bool = False,
    size: int = IMAGE_SIZE,
) -> ImageRead:
    """Read one image file as a normalized float32 ``(size, size)`` array.

    Parameters
    ----------
    path: a ``.npy`` (shape (H, W), (1, H, W) or (H, W, 1); any float, int or uint dtype, any
        byte order, C or Fortran order; or a DeepLenseSim object array holding one such image)
        or a FITS file (``.fits``, ``.fit``, ``.fits.gz``) with 2-D image data.
    hdu: FITS only (ignored for ``.npy``): the HDU index (int) or EXTNAME (str). ``None``
        takes the primary HDU if it holds data, else the first image extension that does.
    fill_nonfinite: replace NaN and inf pixels by the minimum of the finite ones (noted)
        instead of refusing the file.
    resize: resample an image that is not ``size`` x ``size`` (noted, see
        :func:`resample`) instead of refusing it.
    size: pixels per side of the returned image (int >= 1).

    Returns an :class:`ImageRead`. Raises :class:`ImageError` (a ValueError) whose reason says
    why the file cannot be used; ValueError or TypeError for a bad argument.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size {size!r}; expected an int >= 1")
    if hdu is not None and (isinstance(hdu, bool) or not isinstance(hdu, int | str)):
        raise TypeError(f"hdu {hdu!r}; expected None, an HDU index (int) or an EXTNAME (str)")
    name = os.fspath(path)
    name = name.decode(errors="replace") if isinstance(name, bytes) else name
    if not has_accepted_suffix(name):
        raise ImageError(f"suffix of {Path(name).name!r}; expected one of {_suffixes_text()}")
    data = read_file_bytes(name)
    if name.lower().endswith(NPY_SUFFIXES):
        image = read_npy(data)
    else:
        image = read_fits_image(data, hdu=hdu)
    return _finish(image, fill_nonfinite=fill_nonfinite, resize=resize, size=size)


def has_accepted_suffix(path: str | os.PathLike) -> bool:
    """Whether the file name ends with one of :data:`ACCEPTED_SUFFIXES` (any case)."""
    return Path(path).name.lower().endswith(ACCEPTED_SUFFIXES)


def file_fingerprint(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(size in bytes, mtime in ns)`` of the file ``path`` leads to, or None if it cannot be
    stat-ed (missing, dangling symlink, loop, permission denied, invalid name)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


def _suffixes_text() -> str:
    return ", ".join(ACCEPTED_SUFFIXES)


def _finish(image: np.ndarray, *, fill_nonfinite: bool, resize: bool, size: int) -> ImageRead:
    """Fill, resample and min-max normalize a numeric array of an accepted shape."""
    height, width = image_plane(image.shape)
    resampling = (height, width) != (size, size)
    if resampling and not resize:
        raise ImageError(
            f"image of {height}x{width} pixels; expected {size}x{size} (resize=True resamples it)"
        )
    pixels = np.asarray(image, dtype=np.float64).reshape(height, width)
    notes = []
    finite = np.isfinite(pixels)
    if not finite.all():
        bad, n_bad = ~finite, pixels.size - int(finite.sum())
        if n_bad == pixels.size:
            raise ImageError(f"every pixel is non-finite ({n_bad} NaN or inf); nothing to keep")
        if not fill_nonfinite:
            raise ImageError(
                f"{n_bad} of {pixels.size} pixels are non-finite (NaN or inf); expected finite "
                "values (fill_nonfinite=True replaces them with the finite minimum)"
            )
        fill = float(pixels[finite].min())
        pixels = np.where(bad, fill, pixels)
        notes.append(f"{NOTE_FILLED} {n_bad} non-finite pixels with the finite minimum {fill:.6g}")
    low, high = float(pixels.min()), float(pixels.max())
    if low == high:
        raise ImageError(f"constant image (every pixel = {low:.6g}); cannot min-max normalize")
    if resampling:
        pixels = resample(pixels, size)
        notes.append(f"{NOTE_RESAMPLED} {height}x{width} -> {size}x{size} pixels")
        low, high = float(pixels.min()), float(pixels.max())
        # Resampling sums many weighted pixels, so a flat result may differ by rounding only.
        if high - low <= 1e-12 * max(abs(low), abs(high)):
            raise ImageError(f"constant image after resampling to {size}x{size}")
    if not math.isfinite(high - low):  # float64 extremes: shrink first so the range is finite
        pixels, low, high = pixels / 4, low / 4, high / 4
    # x in [low, high] gives (x - low) / (high - low) in [0, 1] exactly under IEEE rounding.
    return ImageRead(((pixels - low) / (high - low)).astype(np.float32), tuple(notes))


# --- finding image files -------------------------------------------------------------------


def find_images(
    inputs: str | os.PathLike | list[str | os.PathLike],
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files named by ``inputs`` (files and folders), and the problems met.

    Folders are searched recursively, following symlinks but never round a loop; entries whose
    name starts with "." (caches, editor files) are passed over. Each folder's entries come in
    natural order ("2.npy" before "10.npy"). Kept: regular files with an accepted suffix.
    Problems, as ``(path, reason)``: an input that does not exist or is a file with another
    suffix, a folder that cannot be listed, a symlink loop, and accepted names that are not
    readable regular files (dangling symlinks, FIFOs, ...). Never raises for what a folder
    holds; a file reached twice is listed once.
    """
    inputs = [inputs] if isinstance(inputs, str | os.PathLike) else inputs
    found: dict[Path, None] = {}  # an ordered set
    problems: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        try:
            st = os.stat(path)
        except (OSError, ValueError) as err:
            reason = stat_problem(path, err) if isinstance(err, OSError) else "invalid name"
            problems.append((path, reason))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(path, (st.st_dev, st.st_ino), found, problems)
        elif not has_accepted_suffix(path):
            problems.append((path, f"suffix of {path.name!r}; expected one of {_suffixes_text()}"))
        elif stat.S_ISREG(st.st_mode):
            found[path] = None
        else:
            problems.append((path, f"not a regular file (a {kind_of(st.st_mode)})"))
    return list(found), problems


def _walk(top: Path, top_id: tuple[int, int], found: dict, problems: list) -> None:
    """Depth-first search of ``top`` with an explicit stack, so depth cannot exhaust recursion."""
    seen = {top_id}
    stack = [(top, {top_id: top}, iter(_list_folder(top, problems)))]
    while stack:
        folder, ancestors, entries = stack[-1]
        name = next(entries, None)
        if name is None:
            stack.pop()
            continue
        path = folder / name
        try:
            st = os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP or has_accepted_suffix(path):
                problems.append((path, stat_problem(path, err)))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                problems.append((path, f"symlink loop: leads back to {ancestors[key]}"))
            elif key not in seen:  # a folder reached again by another route is searched once
                seen.add(key)
                listed = _list_folder(path, problems)
                stack.append((path, {**ancestors, key: path}, iter(listed)))
        elif has_accepted_suffix(path):
            if stat.S_ISREG(st.st_mode):
                found[path] = None
            else:
                problems.append((path, f"not a regular file (a {kind_of(st.st_mode)})"))


def _list_folder(folder: Path, problems: list) -> list[str]:
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except OSError as err:
        problems.append((folder, f"cannot list folder: {stat_problem(folder, err, 'list')}"))
        return []
    return sorted(names, key=natural_key)


def natural_key(path: str | os.PathLike) -> tuple:
    """Sort key putting ``2.npy`` before ``10.npy``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", Path(path).name)
    return tuple((1, int(p), p) if p.isdigit() else (0, 0, p) for p in parts)


# --- resampling ----------------------------------------------------------------------------


def resample(image: np.ndarray, size: int) -> np.ndarray:
    """Resample a 2-D float image (H, W) to (size, size), keeping its total flux.

    Each axis on its own: shrinking gives every output pixel the flux of the input pixels it
    overlaps, weighted by the overlap (exact flux conservation and no aliasing, for any ratio,
    like an ideal detector with bigger pixels); growing interpolates bilinearly (pixel centres,
    edges clamped) and scales by the pixel-area ratio, so total flux is kept up to edge
    effects and the result is smooth rather than blocky. Returns float64 (size, size).
    """
    image = np.asarray(image, dtype=np.float64)
    rows, cols = (_axis_weights(n, size) for n in image.shape)
    return rows @ image @ cols.T


def _axis_weights(n: int, m: int) -> np.ndarray:
    """(m, n) matrix taking n input pixels to m output pixels along one axis."""
    if m < n:
        # In units of 1/(n m): input pixel i spans [i m, (i+1) m), output j spans [j n, (j+1) n).
        i, j = np.arange(n), np.arange(m)[:, None]
        overlap = np.minimum((i + 1) * m, (j + 1) * n) - np.maximum(i * m, j * n)
        return np.clip(overlap, 0, None) / m
    centres = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n - 1)
    weights = np.zeros((m, n))
    np.add.at(weights, (np.arange(m), low), 1 - (centres - low))
    np.add.at(weights, (np.arange(m), high), centres - low)
    return weights * (n / m)
