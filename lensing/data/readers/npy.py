"""The ``.npy`` part of the image reader: a file's bytes to its numeric array, safely.

The header is parsed and its claimed data size checked against the bytes the file holds before
any array is built, so a lying header is an error, not a huge allocation. Object arrays
(DeepLenseSim's ``[image, axion_mass]``) are unpickled by an unpickler that rebuilds NumPy
arrays, numeric dtypes and scalars and nothing else, and checks each array's state before NumPy
sees it: no pickle can run code, crash the interpreter or claim unbounded memory.
"""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
from numpy.lib import format as npy_format

from lensing.data.readers.checks import SHAPES_TEXT, ImageError, image_plane


def read_npy(data: bytes) -> np.ndarray:
    """The numeric array a ``.npy`` file's bytes hold, checked against what the file holds.

    data: the whole file (bytes). Accepted: format 1.0 or 2.0, any float, int or uint dtype in
    either byte order, C or Fortran order, shape (H, W), (1, H, W) or (H, W, 1); or an object
    array holding exactly one such array (other entries, such as a mass, are ignored).
    Returns a read-only view (or the unpickled array) of that shape and dtype. Raises
    ImageError saying why for anything else: no NumPy header (a bare pickle), a mangled or
    oversized header, a header claiming more bytes than follow it, a non-numeric dtype, a
    pickle that names anything but NumPy arrays and numbers.
    """
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
            f"one numeric array of shape {SHAPES_TEXT}"
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
