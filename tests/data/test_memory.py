"""The split's memory: a cached split is mapped, never copied; building it makes no second copy."""

import errno
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lensing.data.cache as cache_module
import lensing.data.dataset as dataset_module
from lensing.core.atomic import AtomicNpyMemmap
from lensing.data.dataset import CACHE_DIR, DataWarning, LensingDataset

linux_only = pytest.mark.skipif(
    not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps"
)


def memory_benchmark():
    """``benchmarks/memory.py``, loaded by path (tests/benchmarks/ shadows the package name)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"
    spec = importlib.util.spec_from_file_location("lensing_memory_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mapped_from(tensor: torch.Tensor) -> Path | None:
    """The file whose mapping holds ``tensor``'s data, or None for anonymous memory."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return Path(fields[5]) if len(fields) > 5 and fields[5].startswith("/") else None
    return None


def cache_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / CACHE_DIR).iterdir())


@linux_only
@pytest.mark.parametrize("load", ["first", "cached"])
def test_the_split_is_the_cache_file_mapped_copy_on_write(small_set, load):
    direct = LensingDataset(small_set, "train", cache=False, progress=False)
    assert mapped_from(direct.images) is None  # without a cache: one array in memory
    if load == "cached":
        LensingDataset(small_set, "train", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about a read-only array
        ds = LensingDataset(small_set, "train", progress=False)
    (npy,) = (small_set / CACHE_DIR).glob("train-*.npy")
    assert mapped_from(ds.images) == npy
    assert torch.equal(ds.images, direct.images)
    # An in-place write changes this process's copy only, never the cache.
    ds.images[0].fill_(7.0)
    assert torch.equal(LensingDataset(small_set, "train", progress=False).images, direct.images)
    assert cache_files(small_set) == sorted([npy.name, npy.with_suffix(".json").name])


def test_a_cached_load_reads_no_image_file(small_set, monkeypatch):
    first = LensingDataset(small_set, "val", progress=False)

    def no_reading(path, **kwargs):
        raise AssertionError(f"read {path} although the cache holds it")

    monkeypatch.setattr(dataset_module, "read_image", no_reading)
    cached = LensingDataset(small_set, "val", progress=False)
    assert torch.equal(cached.images, first.images) and cached.files == first.files
    lazy = LensingDataset(small_set, "val", in_memory=False, progress=False)
    assert lazy.images is None and lazy.files == first.files


def test_skipped_files_leave_no_gap_in_the_cache_file(small_set):
    for name in ("1.npy", "3.npy"):
        (small_set / "train" / "sphere" / name).write_bytes(b"not an image")
    loads = []
    for cache in (False, True, True):  # direct, first, cached
        with pytest.warns(DataWarning, match="skipped 2 of"):
            loads.append(
                LensingDataset(
                    small_set, "train", cache=cache, progress=False, balance_tolerance=1
                )
            )
    direct, first, cached = loads
    (npy,) = (small_set / CACHE_DIR).glob("train-*.npy")
    on_disk = np.load(npy)  # its header and size name only the kept images
    assert on_disk.shape == tuple(direct.images.shape) and len(direct) == 10
    for ds in (first, cached):
        assert torch.equal(ds.images, direct.images) and ds.files == direct.files
    assert not list((small_set / CACHE_DIR).glob(".*"))  # no temporary file left


def test_a_build_that_fails_leaves_no_cache(small_set, monkeypatch):
    real = dataset_module.read_image
    calls = []

    def failing(path, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as if the run were stopped mid-build
        return real(path, **kwargs)

    monkeypatch.setattr(dataset_module, "read_image", failing)
    with pytest.raises(KeyboardInterrupt):
        LensingDataset(small_set, "train", progress=False)
    assert not (small_set / CACHE_DIR).exists() or cache_files(small_set) == []
    monkeypatch.setattr(dataset_module, "read_image", real)
    rebuilt = LensingDataset(small_set, "train", progress=False)
    direct = LensingDataset(small_set, "train", cache=False, progress=False)
    assert torch.equal(rebuilt.images, direct.images)


def test_no_room_for_the_cache_keeps_the_split_in_memory(small_set, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "AtomicNpyMemmap", full)
    with pytest.warns(DataWarning, match="could not write the cache"):
        ds = LensingDataset(small_set, "val", progress=False)
    direct = LensingDataset(small_set, "val", cache=False, progress=False)
    assert torch.equal(ds.images, direct.images)
    assert not list((small_set / CACHE_DIR).glob("*.npy"))


def test_atomic_npy_memmap_commits_the_rows_kept_or_nothing(tmp_path):
    with AtomicNpyMemmap(tmp_path / "a.npy", (1000, 3), np.float32) as sink:
        sink.array[:] = np.arange(3000, dtype=np.float32).reshape(1000, 3)
        sink.commit(rows=7)
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.arange(21).reshape(7, 3))
    with AtomicNpyMemmap(tmp_path / "b.npy", (4, 2), np.float64) as sink:
        sink.array[:] = 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # b never committed


@linux_only
@pytest.mark.slow
def test_a_cached_split_costs_its_float32_bytes_and_no_more(tmp_path, write_set):
    measure = memory_benchmark().measure
    root = write_set(tmp_path / "set", {"train": 300})
    LensingDataset(root, "train", progress=False)  # builds the cache
    # A fresh process: the cached load, every image touched, an epoch in small batches.
    figures = measure(root, batch_size=16)
    assert figures["mapped"], figures
    assert figures["images"] == 810
    assert figures["data_bytes"] == 810 * 4 * 150 * 150
    above = figures["peak"] - figures["baseline"]
    assert above <= 1.3 * figures["data_bytes"], (above, figures, sys.platform)
