"""The .npy part of the reader: headers checked against the bytes, the restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format
from numpy.testing import assert_array_equal

from lensing.data.readers.checks import ImageError
from lensing.data.readers.npy import read_npy

N = 150


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).random((N, N)) * 7 + 2


def npy_bytes(array: np.ndarray, **kwargs) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, **kwargs)
    return stream.getvalue()


def refused(data: bytes, match: str) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        read_npy(data)
    return info.value


def test_layouts_come_back_as_saved(image):
    for array in (image, image.astype(">f4"), image.reshape(1, N, N), image.astype(np.uint16)):
        back = read_npy(npy_bytes(array))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert_array_equal(back, array)


def test_fortran_order_is_honoured(image):
    flipped = np.asfortranarray(image[:, ::-1])
    data = npy_bytes(flipped)
    stream = io.BytesIO(data)
    npy_format.read_magic(stream)
    assert npy_format.read_array_header_1_0(stream)[1] is True  # really Fortran-ordered
    assert_array_equal(read_npy(data), image[:, ::-1])


@pytest.mark.parametrize("mass", [np.float64(2.5e-23), 2.5e-23])
def test_deeplense_object_array_gives_its_image(image, mass):
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, mass
    assert_array_equal(read_npy(npy_bytes(pair, allow_pickle=True)), image)


def test_object_array_with_no_or_two_images_is_refused(image):
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, image * 2
    refused(npy_bytes(pair, allow_pickle=True), "holds 2 numeric images")
    pair[0], pair[1] = 1.0, np.arange(3.0)  # a 1-D array is not an image
    refused(npy_bytes(pair, allow_pickle=True), "holds 0 numeric images")


def header_only(shape: tuple, descr: str = "<f8", payload: bytes = b"\0" * 64) -> bytes:
    stream = io.BytesIO()
    npy_format.write_array_header_1_0(
        stream, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return stream.getvalue() + payload


def test_header_claiming_more_than_the_file_holds():
    error = refused(header_only((100_000, 100_000)), "header claims")
    assert "80000000000 bytes" in error.reason and "only 64 bytes" in error.reason
    refused(header_only((1, N, N)), r"\(truncated\?\)")


def test_mangled_and_oversized_headers():
    refused(b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100, "unreadable .npy header")
    refused(b"\x93NUMPY\x09\x00", r"format version \(9, 0\)")
    giant = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), " + b" " * 60_000 + b"}"
    data = b"\x93NUMPY\x02\x00" + len(giant + b"\n").to_bytes(4, "little") + giant + b"\n"
    refused(data + bytes(32), "unreadable .npy header")  # NumPy's header size limit
    refused(pickle.dumps([1.0]), "not a .npy file")


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OpensFile(RunsShell):
    def __reduce__(self):
        return open, (str(self.marker), "w")


class EvalsCode(RunsShell):
    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


@pytest.mark.parametrize("evil", [RunsShell, OpensFile, EvalsCode])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, image, evil):
    marker = tmp_path / "pwned"
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, evil(marker)
    data = npy_bytes(pair, allow_pickle=True)
    error = refused(data, r"^pickle wants \S+; only NumPy arrays and numbers are allowed$")
    assert not marker.exists()
    assert any(name in error.reason for name in ("system", "open", "eval"))


class LyingObjectArray:
    """Pickles as an object array whose data list is shorter than its shape; NumPy's own
    unpickling of this segfaults, so the reader must refuse it before NumPy sees it."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        state = (1, (1000,), np.dtype(object), False, [np.ones((N, N)), 1.0])
        return _reconstruct, (np.ndarray, (0,), b"b"), state


class HugeEmptyArray:
    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (10**6, 10**6), b"b")


def npy_pickle(obj: object) -> bytes:
    """A .npy of dtype object whose payload is ``obj``'s pickle, written without np.save."""
    return header_only((2,), descr="|O", payload=pickle.dumps(obj, protocol=3))


def test_pickles_that_would_crash_or_exhaust_numpy():
    refused(npy_pickle(LyingObjectArray()), "does not hold its 1000 values")
    refused(npy_pickle(HugeEmptyArray()), "made in an unexpected way")
    corrupt = npy_pickle(np.array([np.ones((N, N)), 1.0], dtype=object))
    refused(corrupt[: len(corrupt) // 2], "unreadable pickled object array")
