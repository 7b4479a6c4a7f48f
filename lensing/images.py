"""Reading one image file into a normalized float32 array, refusing anything unsafe or unusable.

:func:`read_image` takes a ``.npy`` or a FITS file (``.fits``, ``.fit``, ``.fits.gz``) and
returns an :class:`ImageRead`: the image min-max normalized to [0, 1] and notes on anything it
changed. Every file it cannot use raises :class:`ImageError` with a reason; nothing in a file
can make it run code, block, crash the interpreter or claim unbounded memory:

- only regular files are opened, and only after ``os.stat`` says so (a FIFO never blocks);
- no file over :data:`MAX_FILE_BYTES` is read, and a header's claimed data size is checked
  against the bytes the file really holds before any array is built;
- object arrays (DeepLenseSim's ``[image, axion_mass]``) are unpickled by an unpickler that
  rebuilds NumPy arrays, numeric dtypes and scalars and nothing else, and checks each array's
  state before NumPy sees it.

:func:`find_images` lists the accepted files under folders; :func:`file_fingerprint` gives a
file's (size, mtime) for caches. This module imports only NumPy; FITS support (astropy) is
imported when a FITS file is read.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from lensing.config import IMAGE_SIZE

MAX_FILE_BYTES = 64 * 2**20  # the largest file (and decompressed FITS) read, in bytes
NPY_SUFFIXES = (".npy",)
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")
ACCEPTED_SUFFIXES = NPY_SUFFIXES + FITS_SUFFIXES  # matched case-insensitively
_SHAPES_TEXT = "(H, W), (1, H, W) or (H, W, 1)"


class ImageError(ValueError):
    """An image file that cannot be used; ``reason`` (also the message) says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageRead:
    """One image as read by :func:`read_image`.

    array: float32 ndarray (size, size), min-max normalized to [0, 1] (pixel units: none).
    notes: what was done to the file's pixels beyond normalizing, one sentence each (filled
        non-finite pixels, resampling); empty when the file was used as it is.
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
        image = _read_npy(data)
    else:
        from lensing.fits import read_fits_image

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


def read_file_bytes(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes (default :data:`MAX_FILE_BYTES`).

    Raises ImageError for anything else: missing, dangling symlink, symlink loop, permission
    denied, not a regular file, empty, over the limit, unreadable.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageError(stat_problem(path, err)) from None
    except ValueError as err:  # an embedded NUL byte in the name
        raise ImageError(f"invalid file name ({err})") from None
    _check_regular(st, limit)
    # O_NONBLOCK: a FIFO swapped in after the stat must not make open() wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise ImageError(stat_problem(path, err, action="open")) from None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            _check_regular(st, limit)
            os.set_blocking(fd, True)
            data = f.read(st.st_size + 1)  # one byte more tells a file that is still growing
    except OSError as err:
        raise ImageError(f"cannot read ({err.strerror or err})") from None
    if len(data) != st.st_size:
        raise ImageError(f"file changed size while being read ({st.st_size} -> {len(data)})")
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def stat_problem(path: str | os.PathLike, err: OSError, action: str = "stat") -> str:
    """The reason an ``os.stat`` (or open) of ``path`` failed, in words."""
    if err.errno == errno.ELOOP:
        return "symlink loop (a symlink that leads back to itself)"
    if err.errno == errno.ENOENT:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symlink (points to {target!r}, which does not exist)"
        return "does not exist"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied (cannot {action})"
    return f"cannot {action} ({err.strerror or err})"


def kind_of(mode: int) -> str:
    """What a stat mode is, in words: ``"regular file"``, ``"folder"``, ``"FIFO"``, ..."""
    kinds = [
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


def _check_regular(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"not a regular file (a {kind_of(st.st_mode)})")
    if st.st_size > limit:
        raise ImageError(f"file of {st.st_size} bytes; the limit is {limit} bytes")


def _suffixes_text() -> str:
    return ", ".join(ACCEPTED_SUFFIXES)


def image_plane(shape: tuple[int, ...], *, trailing: bool = True) -> tuple[int, int]:
    """(H, W) of an accepted image shape: (H, W), (1, H, W), and (H, W, 1) if ``trailing``.

    Raises ImageError naming the shape otherwise, or when H or W is 0.
    """
    if len(shape) == 2:
        plane = shape
    elif len(shape) == 3 and shape[0] == 1:
        plane = shape[1:]
    elif len(shape) == 3 and shape[2] == 1 and trailing:
        plane = shape[:2]
    else:
        expected = _SHAPES_TEXT if trailing else "(H, W) or (1, H, W)"
        raise ImageError(f"shape {tuple(shape)}; expected {expected}")
    if 0 in plane:
        raise ImageError(f"empty image of shape {tuple(shape)}")
    return int(plane[0]), int(plane[1])


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
        notes.append(f"filled {n_bad} non-finite pixels with the finite minimum {fill:.6g}")
    low, high = float(pixels.min()), float(pixels.max())
    if low == high:
        raise ImageError(f"constant image (every pixel = {low:.6g}); cannot min-max normalize")
    if resampling:
        pixels = resample(pixels, size)
        notes.append(f"resampled {height}x{width} -> {size}x{size} pixels")
        low, high = float(pixels.min()), float(pixels.max())
        # Resampling sums many weighted pixels, so a flat result may differ by rounding only.
        if high - low <= 1e-12 * max(abs(low), abs(high)):
            raise ImageError(f"constant image after resampling to {size}x{size}")
    if not math.isfinite(high - low):  # float64 extremes: shrink first so the range is finite
        pixels, low, high = pixels / 4, low / 4, high / 4
    # x in [low, high] gives (x - low) / (high - low) in [0, 1] exactly under IEEE rounding.
    return ImageRead(((pixels - low) / (high - low)).astype(np.float32), tuple(notes))


def _read_npy(data: bytes) -> np.ndarray:
    """The numeric array of a ``.npy`` file's bytes, checked against what the file holds."""
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
    except ValueError:
        raise ImageError("not a .npy file (no NumPy header; pickles are refused)") from None
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise ImageError(f".npy format version {version}; expected 1.0 or 2.0")
    try:
        shape, fortran, dtype = readers[version](stream)
    except Exception as err:  # the header parser raises several types for a mangled header
        raise ImageError(f"unreadable .npy header ({err})") from None
    offset = stream.tell()
    if dtype.hasobject:
        if dtype != np.dtype(object):
            raise ImageError(f"structured dtype {dtype} with objects; expected a numeric dtype")
        return _unpickle_image(data[offset:])
    if dtype.kind not in "fiu":
        raise ImageError(f"non-numeric dtype {dtype}; expected a float, int or uint dtype")
    image_plane(shape)
    claimed = math.prod(shape) * dtype.itemsize
    held = len(data) - offset
    if claimed > held:
        raise ImageError(
            f"header claims shape {shape} of {dtype} ({claimed} bytes) but the file holds only "
            f"{held} bytes of data (truncated?)"
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


# --- the restricted unpickler for object arrays -------------------------------------------

# Dtype codes a pickled array or scalar may use: numbers, and "O8" for the outer object array.
_PICKLE_DTYPES = frozenset(
    ["b1", "O8", "f2", "f4", "f8", "f16", "c8", "c16", "c32"]
    + [f"{kind}{n}" for kind in "iu" for n in (1, 2, 4, 8)]
)
_NDARRAY = object()  # stands for numpy.ndarray: passed to _reconstruct, never callable


class _PickledDtype:
    """A dtype a pickle names, held back from NumPy until its code and state are checked."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if not isinstance(code, str) or code not in _PICKLE_DTYPES:
            raise ImageError(f"pickle wants dtype {code!r}; only numeric NumPy dtypes are allowed")
        self.code, self.order = code, "="

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        ok = isinstance(state, tuple) and 8 <= len(state) <= 9 and state[1] in ("<", ">", "|")
        if not ok or any(part is not None for part in state[2:5]):
            raise ImageError("pickled dtype with an unexpected state; expected a plain dtype")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype if self.order == "|" else dtype.newbyteorder(self.order)


class _CheckedArray(np.ndarray):
    """An ndarray whose pickled state is checked before NumPy's ``__setstate__`` sees it
    (NumPy trusts the state: an object array's list shorter than its shape crashes it)."""

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise ImageError("pickled array with an unexpected state")
        _, shape, dtype, fortran, payload = state
        if not isinstance(dtype, _PickledDtype):
            raise ImageError("pickled array without a pickled dtype")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise ImageError(f"pickled array of shape {shape!r}; expected a tuple of sizes")
        dtype, count = dtype.resolve(), math.prod(shape)
        if dtype.hasobject:
            whole = isinstance(payload, list) and len(payload) == count
        else:
            whole = isinstance(payload, bytes) and len(payload) == count * dtype.itemsize
        if not whole:
            raise ImageError(f"pickled array of shape {shape} does not hold its {count} values")
        super().__setstate__((1, shape, dtype, bool(fortran), payload))


def _reconstruct(subtype: object, shape: object, typecode: object) -> _CheckedArray:
    # NumPy pickles every array as _reconstruct(ndarray, (0,), b"b") followed by its state.
    if subtype is not _NDARRAY or not (isinstance(shape, tuple) and shape == (0,)):
        raise ImageError("pickled array made in an unexpected way")
    return _CheckedArray((0,), np.uint8)


def _scalar(dtype: object, payload: object = None) -> np.generic:
    if not isinstance(dtype, _PickledDtype) or dtype.resolve().hasobject:
        raise ImageError("pickled scalar without a numeric pickled dtype")
    dtype = dtype.resolve()
    if not (isinstance(payload, bytes) and len(payload) == dtype.itemsize):
        raise ImageError(f"pickled {dtype} scalar of the wrong length")
    return np.frombuffer(payload, dtype=dtype)[0]


_PICKLE_GLOBALS = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _PickledDtype}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _PICKLE_GLOBALS[(_module, "_reconstruct")] = _reconstruct
    _PICKLE_GLOBALS[(_module, "scalar")] = _scalar


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        found = _PICKLE_GLOBALS.get((module, name))
        if found is None:
            raise ImageError(
                f"pickle wants {module}.{name}; only NumPy arrays and numbers are allowed"
            )
        return found


def _unpickle_image(payload: bytes) -> np.ndarray:
    """The one numeric image inside a pickled object array (other entries are ignored)."""
    try:
        top = _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    except ImageError:
        raise
    except Exception as err:  # a mangled pickle can fail in any of the opcode handlers
        raise ImageError(
            f"unreadable pickled object array ({type(err).__name__}: {err})"
        ) from None
    if isinstance(top, np.ndarray) and top.dtype.hasobject:
        entries = list(top.ravel())
    else:
        entries = list(top) if isinstance(top, list | tuple) else [top]
    images = [e for e in entries if isinstance(e, np.ndarray) and _is_numeric_image(e)]
    if len(images) != 1:
        described = ", ".join(_describe(e) for e in entries[:6]) or "nothing"
        raise ImageError(
            f"object array holds {len(images)} numeric images ({described}); expected exactly "
            f"one numeric array of shape {_SHAPES_TEXT}"
        )
    return images[0].view(np.ndarray)


def _is_numeric_image(array: np.ndarray) -> bool:
    try:
        image_plane(array.shape)
    except ImageError:
        return False
    return array.dtype.kind in "fiu"


def _describe(entry: object) -> str:
    if isinstance(entry, np.ndarray):
        return f"array {entry.shape} {entry.dtype}"
    return type(entry).__name__


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
