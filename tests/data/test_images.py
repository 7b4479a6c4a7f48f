"""The image reader: every accepted layout, every refusal, file discovery, fingerprints."""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from numpy.testing import assert_allclose

from lensing.data.readers import checks
from lensing.data.readers import image as images
from lensing.data.readers.image import (
    ImageError,
    ImageRead,
    file_fingerprint,
    find_images,
    read_image,
    resample,
)

N = 150


def normalized(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64).reshape(N, N)
    return (image - image.min()) / (image.max() - image.min())


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A float64 (150, 150) image with a ring on noise, not normalized (range about 2 to 9)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:N, :N] - N / 2
    ring = np.exp(-(((np.hypot(yy, xx) - 30) / 3) ** 2))
    return 2 + 5 * ring + 2 * rng.random((N, N))


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to "1.NPY"
        np.save(f, array, **kwargs)
    return path


def refused(path, match: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        read_image(path, **kwargs)
    assert info.value.reason == str(info.value)
    return info.value


def reason(path) -> str:
    """``read_image``'s refusal of ``path`` ("no error" when it reads)."""
    try:
        read_image(path)
    except ImageError as err:
        assert err.reason == str(err)
        return err.reason
    return "no error"


# --- accepted layouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["f8 (1,H,W)", "f4 (H,W)", "f8 (H,W,1)", ">f8", "fortran", "f2"],
)
def test_float_layouts_give_the_normalized_image(tmp_path, image, layout):
    arrays = {
        "f8 (1,H,W)": image.reshape(1, N, N),
        "f4 (H,W)": image.astype(np.float32),
        "f8 (H,W,1)": image.reshape(N, N, 1),
        ">f8": image.astype(">f8"),
        "fortran": np.asfortranarray(image),
        "f2": image.astype(np.float16),
    }
    array = arrays[layout]
    read = read_image(save(tmp_path / "x.npy", array))
    assert read.array.dtype == np.float32 and read.array.shape == (N, N)
    assert read.notes == ()
    assert_allclose(read.array, normalized(array), atol=1e-6)
    assert read.array.min() == 0 and read.array.max() == 1


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.uint8, np.int32])
def test_integer_counts_match_the_prenormalized_file(tmp_path, image, dtype):
    counts = np.round((image - 2) * 25).astype(dtype)  # photon counts 0..225
    from_counts = read_image(save(tmp_path / "counts.npy", counts)).array
    prenormalized = save(tmp_path / "norm.npy", normalized(counts.astype(np.float64)))
    assert_allclose(from_counts, read_image(prenormalized).array, atol=1e-6)
    assert len(np.unique(from_counts)) > 100


def test_fits_primary_extension_index_name_and_gzip(tmp_path, image):
    fits.PrimaryHDU(image).writeto(tmp_path / "primary.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), name="SCI")]).writeto(
        tmp_path / "ext.fit"
    )
    other = image[::-1].copy()
    fits.HDUList([fits.PrimaryHDU(other), fits.ImageHDU(image, name="SCI")]).writeto(
        tmp_path / "both.fits.gz"
    )
    with open(tmp_path / "both.fits.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # astropy really gzipped it
    for path, hdu in [
        ("primary.fits", None),
        ("ext.fit", None),
        ("ext.fit", 1),
        ("ext.fit", "sci"),
        ("both.fits.gz", 1),
        ("both.fits.gz", "SCI"),
    ]:
        read = read_image(tmp_path / path, hdu=hdu)
        assert_allclose(read.array, normalized(image), atol=1e-6, err_msg=f"{path} {hdu}")
    assert_allclose(read_image(tmp_path / "both.fits.gz").array, normalized(other), atol=1e-6)


def test_fits_counts_cube_and_compressed(tmp_path, image):
    counts = np.round((image - 2) * 25).astype(np.uint16)  # stored with BZERO = 32768
    fits.PrimaryHDU(counts).writeto(tmp_path / "counts.fits")
    fits.PrimaryHDU(image.reshape(1, N, N)).writeto(tmp_path / "cube.fits")
    # Rice compression is lossless for integers.
    fits.CompImageHDU(counts.astype(np.int32), name="C").writeto(tmp_path / "comp.fits")
    assert_allclose(read_image(tmp_path / "counts.fits").array, normalized(counts), atol=1e-6)
    assert_allclose(read_image(tmp_path / "cube.fits").array, normalized(image), atol=1e-6)
    assert_allclose(read_image(tmp_path / "comp.fits").array, normalized(counts), atol=1e-6)


# --- refusals: pixels and sizes ---------------------------------------------------------------


def test_constant_image(tmp_path):
    refused(save(tmp_path / "x.npy", np.full((N, N), 7.0)), r"constant image \(every pixel = 7\)")


def test_nonfinite_pixels_with_and_without_fill(tmp_path, image):
    spoiled = image.copy()
    spoiled[3, 4], spoiled[5, 6], spoiled[7, 8] = np.nan, np.inf, -np.inf
    path = save(tmp_path / "x.npy", spoiled)
    refused(path, f"3 of {N * N} pixels are non-finite")
    read = read_image(path, fill_nonfinite=True)
    filled = np.where(np.isfinite(spoiled), spoiled, spoiled[np.isfinite(spoiled)].min())
    assert_allclose(read.array, normalized(filled), atol=1e-6)
    assert len(read.notes) == 1 and "filled 3 non-finite" in read.notes[0]
    refused(save(tmp_path / "nan.npy", np.full((N, N), np.nan)), "every pixel is non-finite")


def test_wrong_size_refused_unless_resized(tmp_path, image):
    big = np.kron(image, np.ones((2, 2)))  # 300x300, every pixel split in four
    refused(save(tmp_path / "big.npy", big), "image of 300x300 pixels; expected 150x150")
    read = read_image(tmp_path / "big.npy", resize=True)
    assert read.array.shape == (N, N) and "300x300 -> 150x150" in read.notes[0]
    assert_allclose(read.array, normalized(image), atol=1e-6)
    small = read_image(save(tmp_path / "small.npy", image[::2, ::2]), resize=True)
    assert small.array.shape == (N, N) and small.array.min() == 0 and small.array.max() == 1


@pytest.mark.parametrize("shape", [(300, 300), (200, 170), (151, 600)])
def test_downsampling_keeps_flux_exactly(image, shape):
    rng = np.random.default_rng(1)
    source = rng.random(shape) * 100
    out = resample(source, N)
    assert out.shape == (N, N)
    assert_allclose(out.sum(), source.sum(), rtol=1e-12)
    if shape == (300, 300):
        assert_allclose(out, source.reshape(N, 2, N, 2).sum(axis=(1, 3)), rtol=1e-12)


def test_upsampling_is_bilinear_and_keeps_flux(image):
    yy, xx = np.mgrid[:75, :75] - 37
    blob = np.exp(-(yy**2 + xx**2) / (2 * 8.0**2))  # smooth and faint at the edges
    out = resample(blob, N)
    assert_allclose(out.sum(), blob.sum(), rtol=1e-3)
    ramp = resample(np.tile(np.arange(75.0), (75, 1)), N)  # linear in x stays linear inside
    assert_allclose(np.diff(ramp[10, 2:-2]), np.diff(ramp[10, 2:-2]).mean(), rtol=1e-9)


def test_constant_after_resampling_is_refused(tmp_path):
    checker = np.indices((300, 300)).sum(axis=0) % 2.0  # 2x2 blocks average to a flat image
    refused(save(tmp_path / "x.npy", checker), "constant image after resampling", resize=True)


def test_bad_arrays(tmp_path, image):
    refused(save(tmp_path / "a.npy", np.stack([image, image])), r"shape \(2, 150, 150\)")
    refused(save(tmp_path / "b.npy", image > 4), "non-numeric dtype bool")
    refused(save(tmp_path / "c.npy", image.astype(complex)), "dtype complex128")
    refused(save(tmp_path / "d.npy", np.zeros((0, N))), "empty image")
    (tmp_path / "e.npy").write_bytes(pickle.dumps(image))
    refused(tmp_path / "e.npy", "not a .npy file")
    (tmp_path / "f.npy").write_bytes(b"")
    refused(tmp_path / "f.npy", r"empty file \(0 bytes\)")
    data = save(tmp_path / "whole.npy", image).read_bytes()
    (tmp_path / "g.npy").write_bytes(data[:-10])
    refused(tmp_path / "g.npy", r"header claims .* \(truncated\?\)")
    # The size is named before the pixels are judged.
    refused(save(tmp_path / "i.npy", np.zeros((1, 64, 64))), "image of 64x64 pixels")
    (tmp_path / "h.png").write_bytes(b"\x89PNG")
    refused(tmp_path / "h.png", r"suffix of 'h.png'; expected one of .npy, .fits")


# --- refusals: files that lie or could harm ---------------------------------------------------


def test_fits_header_claiming_more_than_the_file_holds(tmp_path, image):
    header = fits.Header([("SIMPLE", True), ("BITPIX", -64), ("NAXIS", 2)])
    header["NAXIS1"], header["NAXIS2"] = 100_000, 100_000
    (tmp_path / "x.fits").write_bytes(header.tostring().encode() + b"\0" * 2880)
    refused(tmp_path / "x.fits", "HDU 0 header claims 80000000000 bytes")
    fits.PrimaryHDU(image).writeto(tmp_path / "cut.fits")
    data = (tmp_path / "cut.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.fits", "HDU 0 header claims 180000 bytes")


def test_fits_refusals(tmp_path, image):
    table = fits.BinTableHDU.from_columns([fits.Column(name="m", format="E", array=[1.0])])
    table.name = "MASS"
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI"), table])
    hdus.writeto(tmp_path / "x.fits")
    refused(tmp_path / "x.fits", r"no HDU 5; the file has 3: 0 'PRIMARY'.*2 'MASS'", hdu=5)
    refused(tmp_path / "x.fits", r"no HDU named 'ERR'; the file has: .*'SCI'", hdu="ERR")
    refused(tmp_path / "x.fits", "is not an image", hdu="MASS")
    refused(tmp_path / "x.fits", "holds no data", hdu=0)
    fits.PrimaryHDU(np.stack([image, image])).writeto(tmp_path / "cube.fits")
    refused(tmp_path / "cube.fits", r"shape \(2, 150, 150\); expected \(H, W\) or \(1, H, W\)")
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    refused(tmp_path / "empty.fits", "no HDU holds image data")
    (tmp_path / "text.fits").write_text("hello")
    refused(tmp_path / "text.fits", "not a FITS file")
    (tmp_path / "bad.fits.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    refused(tmp_path / "bad.fits.gz", "not a readable gzip file")


def test_byte_limit(tmp_path, image, monkeypatch):
    path = save(tmp_path / "x.npy", image)
    monkeypatch.setattr(checks, "MAX_FILE_BYTES", 1000)
    refused(path, f"file of {path.stat().st_size} bytes; the limit is 1000 bytes")


def test_entries_that_are_not_regular_files(tmp_path, image):
    (tmp_path / "dir.npy").mkdir()
    refused(tmp_path / "dir.npy", r"not a regular file \(a folder\)")
    os.symlink(tmp_path / "gone.npy", tmp_path / "dangling.npy")
    refused(tmp_path / "dangling.npy", "dangling symlink")
    os.symlink(tmp_path / "b.npy", tmp_path / "a.npy")
    os.symlink(tmp_path / "a.npy", tmp_path / "b.npy")
    refused(tmp_path / "a.npy", "symlink loop")
    refused(tmp_path / "missing.npy", "does not exist")


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "x.npy")
    errors = []
    reader = threading.Thread(target=lambda: errors.append(catch(tmp_path / "x.npy")))
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader so the test run can end
        with open(tmp_path / "x.npy", "wb"):
            pass
        pytest.fail("read_image blocked on a FIFO")
    assert "not a regular file (a FIFO)" in errors[0]


def catch(path) -> str:
    try:
        read_image(path)
    except ImageError as err:
        return err.reason
    return "no error"


def test_permission_denied(open_dir, image, as_unprivileged):
    readable = save(open_dir / "readable.npy", image)
    locked = save(open_dir / "locked.npy", image)
    readable.chmod(0o644)
    locked.chmod(0)
    assert reason(readable) == "no error"  # as root, and loads the reader's imports
    # The readable file reads as nobody too: the refusal is the file's mode, nothing else.
    both = as_unprivileged(lambda: (reason(readable), reason(locked)))
    assert both[0] == "no error"
    assert "permission denied" in both[1], both[1]


def test_permission_errors_are_named(tmp_path):
    # Root bypasses file modes, so the mapping from the OS error is checked on its own too.
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert images.stat_problem(tmp_path / "x.npy", denied) == "permission denied (cannot stat)"
    assert images.stat_problem(tmp_path, denied, "list") == "permission denied (cannot list)"


def test_bad_arguments(tmp_path, image):
    path = save(tmp_path / "x.npy", image)
    with pytest.raises(ValueError, match="size 0; expected an int >= 1"):
        read_image(path, size=0)
    with pytest.raises(TypeError, match="hdu 1.5"):
        read_image(path, hdu=1.5)
    result = read_image(path, hdu=3)  # hdu is for FITS; a .npy ignores it
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.array = None
    assert isinstance(result, ImageRead)


# --- discovery and fingerprints ---------------------------------------------------------------


def test_find_images_nested_with_loop(tmp_path, image):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    (root / ".cache").mkdir()
    for name in ["10.npy", "2.npy", "1.NPY"]:
        save(root / "a" / name, image)
    fits.PrimaryHDU(image).writeto(root / "b" / "c" / "3.fits.gz")
    (root / "b" / "notes.txt").write_text("not an image")
    save(root / ".cache" / "train.npy", image)
    os.symlink(root, root / "b" / "up")  # a loop back to the top
    os.symlink(root / "a", root / "b" / "also_a")  # the same folder by another route
    os.symlink(tmp_path / "gone.npy", root / "b" / "dangling.npy")
    os.mkfifo(root / "b" / "pipe.npy")
    (tmp_path / "readme.txt").write_text("x")
    inputs = [root, tmp_path / "missing", tmp_path / "readme.txt", root / "a" / "2.npy"]
    files, problems = find_images(inputs)
    relative = [p.relative_to(root).as_posix() for p in files]
    assert relative == ["a/1.NPY", "a/2.npy", "a/10.npy", "b/c/3.fits.gz"]
    reasons = {p.relative_to(tmp_path).as_posix(): why for p, why in problems}
    assert reasons.keys() == {
        "data/b/up",
        "data/b/dangling.npy",
        "data/b/pipe.npy",
        "missing",
        "readme.txt",
    }
    assert reasons["data/b/up"].startswith("symlink loop")
    assert "dangling symlink" in reasons["data/b/dangling.npy"]
    assert "FIFO" in reasons["data/b/pipe.npy"]
    assert reasons["missing"] == "does not exist"
    assert "suffix" in reasons["readme.txt"]
    assert all(read_image(p).array.shape == (N, N) for p in files)


def test_find_images_unreadable_folder(open_dir, image, as_unprivileged):
    for name in ("locked", "open"):
        (open_dir / name).mkdir(mode=0o755)
        save(open_dir / name / "1.npy", image).chmod(0o644)
    (open_dir / "locked").chmod(0)
    assert len(find_images(open_dir)[0]) == (2 if os.geteuid() == 0 else 1)  # root lists all
    files, problems = as_unprivileged(find_images, open_dir)
    assert files == [open_dir / "open" / "1.npy"]
    assert [path for path, _ in problems] == [open_dir / "locked"]
    assert "permission denied" in problems[0][1]


def test_file_fingerprint(tmp_path, image):
    path = save(tmp_path / "x.npy", image)
    st = path.stat()
    assert file_fingerprint(path) == (st.st_size, st.st_mtime_ns)
    assert file_fingerprint(tmp_path / "missing.npy") is None
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert file_fingerprint(tmp_path / "loop") is None


def test_import_stays_light():
    code = (
        "import sys, lensing.data.readers.image; "
        "print('astropy' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "part",
    ["lensing.data.readers.npy", "lensing.data.readers.fits", "lensing.data.readers.checks"],
)
def test_format_parts_do_not_import_the_reader(part):
    # images imports npy and fits; were either to import images back, this would be a cycle.
    code = f"import sys, {part}; print('lensing.data.readers.image' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
