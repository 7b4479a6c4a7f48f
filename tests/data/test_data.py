import io
import json
import os
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format
from numpy.testing import assert_allclose, assert_array_equal

from lensing.core.constants import CLASSES, IMAGE_SIZE
from lensing.data.dataset import (
    CACHE_DIR,
    TEST_SPLIT_FILE,
    DataWarning,
    LensingDataset,
    check_balance,
    find_split_files,
    load_image,
    load_splits,
    provenance,
    split_off_test_set,
)
from lensing.data.download import write_source_marker
from lensing.data.readers.checks import MAX_FILE_BYTES, ImageError

SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("shape", [SHAPE, (IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1)])
def test_every_accepted_shape_loads_as_one_channel_float32(tmp_path, shape, write_set):
    root = write_set(tmp_path, {"train": 2, "val": 1, "test": 1}, shape=shape)
    ds = LensingDataset(root, "train", cache=False, progress=False)
    image, label = ds[0]
    assert image.shape == SHAPE and image.dtype == torch.float32
    raw = np.load(root / "train" / "no" / "1.npy").reshape(SHAPE)
    assert_array_equal(image.numpy(), raw.astype(np.float32))
    assert label == 0 and len(ds) == 6 and ds.skipped == []


def test_natural_order_and_labels(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 11, "val": 1, "test": 1})
    files = find_split_files(root, "train")
    names = [p.name for p, y in files if y == 0]
    assert names == [f"{i}.npy" for i in range(1, 12)]  # 2.npy before 10.npy
    assert [y for _, y in files] == [0] * 11 + [1] * 11 + [2] * 11
    assert files == find_split_files(root, "train")  # deterministic


def bad_files(folder: Path) -> dict[str, str]:
    """Write one file of every bad kind; return name -> expected words in the reason."""
    good = np.random.default_rng(0).random(SHAPE)
    (folder / "empty.npy").write_bytes(b"")
    np.save(folder / "whole.npy", good)
    raw = (folder / "whole.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    (folder / "whole.npy").unlink()
    np.save(folder / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "pickle.npy").write_bytes(pickle.dumps(good))
    np.save(folder / "shape.npy", np.zeros((3, IMAGE_SIZE, IMAGE_SIZE)))
    np.save(folder / "small.npy", good[:, :64, :64])
    np.save(folder / "nan.npy", np.full(SHAPE, np.nan))
    np.save(folder / "inf.npy", np.where(good > 0.5, np.inf, good))
    np.save(folder / "flat.npy", np.full(SHAPE, 3.0))
    np.save(folder / "text.npy", np.array(["a"] * 3))
    (folder / "garbage.npy").write_bytes(os.urandom(500))
    return {
        "empty.npy": "empty file",
        "truncated.npy": "truncated",
        "object.npy": "holds 0 numeric images",
        "pickle.npy": "pickles are refused",
        "shape.npy": "shape",
        "small.npy": "image of 64x64 pixels; expected 150x150",
        "nan.npy": "every pixel is non-finite",
        "inf.npy": "pixels are non-finite",
        "flat.npy": "constant image",
        "text.npy": "non-numeric",
        "garbage.npy": "not a .npy file",
    }


def test_load_image_names_the_problem(tmp_path):
    for name, words in bad_files(tmp_path).items():
        with pytest.raises(ImageError, match=words):
            load_image(tmp_path / name)


def test_counts_and_prenormalized_files_give_the_same_tensor(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 2, "val": 2, "test": 1})
    path = root / "val" / "vort" / "2.npy"
    prenormalized = LensingDataset(root, "val", cache=False, progress=False)
    counts = np.round(np.load(path) * 200 + 7).astype(np.int64)  # photon counts 7..207
    np.save(path, counts.reshape(IMAGE_SIZE, IMAGE_SIZE))
    os.utime(path, ns=(10**18, 10**18))  # a new fingerprint whatever the clock's resolution
    from_counts = LensingDataset(root, "val", progress=False)
    expected = (counts - counts.min()) / (counts.max() - counts.min())
    assert_allclose(from_counts.images[5].numpy(), expected, atol=1e-7)
    assert_allclose(from_counts.images[5], prenormalized.images[5], atol=3e-3)  # rounding only
    assert torch.equal(from_counts.images[:5], prenormalized.images[:5])


@pytest.mark.parametrize("in_memory", [True, False])
def test_bad_files_are_skipped_listed_and_summed_in_one_warning(tmp_path, in_memory, write_set):
    root = write_set(tmp_path, {"train": 3, "val": 3, "test": 1})
    expected = bad_files(root / "val" / "sphere")
    with pytest.warns(DataWarning, match=f"skipped {len(expected)} of {9 + len(expected)}"):
        ds = LensingDataset(root, "val", in_memory=in_memory, progress=False)
    assert {p.name: why for p, why in ds.skipped}.keys() == expected.keys()
    for path, why in ds.skipped:
        assert expected[path.name] in why
    assert len(ds) == 9 and ds.class_counts() == {"no": 3, "sphere": 3, "vort": 3}
    assert all(torch.isfinite(ds[i][0]).all() for i in range(len(ds)))


def test_missing_class_folder_and_empty_split_are_clear_errors(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 2, "val": 1, "test": 1})
    for f in (root / "val").rglob("*.npy"):
        f.unlink()
    with pytest.raises(ValueError, match=f"no usable image file in {root / 'val'}"):
        LensingDataset(root, "val", progress=False)
    (root / "train" / "vort").rename(root / "train" / "vortex")
    with pytest.raises(FileNotFoundError, match=str(root / "train" / "vort")):
        LensingDataset(root, "train", progress=False)
    with pytest.raises(FileNotFoundError, match="no split folder"):
        LensingDataset(tmp_path / "nowhere", "train", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        LensingDataset(root, "validation")


def test_balance_check_warns_past_the_tolerance():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_balance({"no": 100, "sphere": 95, "vort": 105}, tolerance=0.1)
    with pytest.warns(DataWarning, match="vort off by more than 10%"):
        assert not check_balance({"no": 100, "sphere": 100, "vort": 70}, tolerance=0.1)


def test_unbalanced_split_warns(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 5, "val": 1, "test": 1})
    for i in (1, 2, 3):
        (root / "train" / "no" / f"{i}.npy").unlink()
    with pytest.warns(DataWarning, match="unbalanced"):
        LensingDataset(root, "train", progress=False)


def test_test_split_cut_from_train_is_stratified_fixed_and_disjoint(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 20, "val": 2})
    first = split_off_test_set(root, test_fraction=0.2, seed=3)
    record = json.loads((root / TEST_SPLIT_FILE).read_text())
    assert len(record["test"]) == 12 and record["seed"] == 3
    train, test = set(first["train"]), set(first["test"])
    assert not train & test and len(train | test) == 60
    assert [sum(y == c for _, y in first["test"]) for c in range(3)] == [4, 4, 4]
    # Written down and reused: other arguments on a re-run do not change the split.
    assert split_off_test_set(root, test_fraction=0.5, seed=99) == first
    splits = load_splits(root, progress=False)
    assert set(splits["test"].files) == {p for p, _ in first["test"]}
    assert not set(splits["train"].files) & set(splits["test"].files)
    assert len(splits["train"]) == 48 and len(splits["val"]) == 6


def test_existing_test_folder_is_used_as_is(small_set):
    splits = split_off_test_set(small_set)
    assert all(p.parts[-3] == "test" for p, _ in splits["test"]) and len(splits["test"]) == 6
    assert len(splits["train"]) == 12 and not (small_set / TEST_SPLIT_FILE).exists()


def test_empty_test_set_is_a_clear_error(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 1, "val": 1})
    with pytest.raises(ValueError, match="empty test set"):
        split_off_test_set(root)
    root = write_set(tmp_path / "b", {"train": 2, "val": 1})
    for name in CLASSES:
        (root / "test" / name).mkdir(parents=True)
    with pytest.raises(ValueError, match="empty test set"):
        split_off_test_set(root)


def test_cache_gives_the_same_tensors_and_is_rebuilt_when_files_change(small_set):
    direct = LensingDataset(small_set, "train", cache=False, progress=False)
    first = LensingDataset(small_set, "train", progress=False)
    assert len(list((small_set / ".cache").glob("train-*.npy"))) == 1
    cached = LensingDataset(small_set, "train", progress=False)
    for ds in (first, cached):
        assert torch.equal(ds.images, direct.images) and torch.equal(ds.labels, direct.labels)
        assert ds.files == direct.files
    # A changed file changes the fingerprint: the cache is rebuilt, not reused stale.
    target = small_set / "train" / "sphere" / "2.npy"
    ramp = np.linspace(0, 1, IMAGE_SIZE * IMAGE_SIZE).reshape(SHAPE)
    np.save(target, ramp * 5 + 1)
    os.utime(target, ns=(1, 1))
    rebuilt = LensingDataset(small_set, "train", progress=False)
    assert_allclose(rebuilt.images[5].numpy(), ramp, atol=1e-6)
    assert len(list((small_set / ".cache").glob("train-*.npy"))) == 1


def test_lazy_mode_holds_no_images_and_reads_the_same(small_set):
    eager = LensingDataset(small_set, "val", progress=False)
    lazy = LensingDataset(small_set, "val", in_memory=False, progress=False)
    assert lazy.images is None and len(lazy) == len(eager)
    for i in range(len(lazy)):
        assert torch.equal(lazy[i][0], eager[i][0]) and lazy[i][1] == eager[i][1]


def test_provenance_follows_the_manifest_and_the_download_marker(small_set):
    assert provenance(small_set) == "external"  # an unknown folder is never called real
    (small_set / "source.json").write_text('{"source": "x"}')  # not a valid marker
    assert provenance(small_set) == "external"
    write_source_marker(small_set, "0" * 64, "https://example.org/dataset.zip")
    assert provenance(small_set) == "deeplense-test-i"
    assert LensingDataset(small_set, "val", progress=False).kind == "deeplense-test-i"
    (small_set / "manifest.json").write_text("{}")
    assert provenance(small_set) == "simulated"
    assert LensingDataset(small_set, "val", progress=False).kind == "simulated"


def hostile_entries(folder: Path) -> dict[str, str]:
    """Entries no data folder should hold; return name -> expected words in the reason."""
    stream = io.BytesIO()  # a header claiming 80 GB of pixels, followed by 64 bytes
    header = {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
    npy_format.write_array_header_1_0(stream, header)
    (folder / "huge_header.npy").write_bytes(stream.getvalue() + bytes(64))
    with open(folder / "sparse.npy", "wb") as f:  # over the size limit, but no disk used
        f.truncate(MAX_FILE_BYTES + 1)
    os.mkfifo(folder / "pipe.npy")
    (folder / "folder.npy").mkdir()
    os.symlink(folder / "gone.npy", folder / "dangling.npy")
    os.symlink(folder / "loop_b.npy", folder / "loop_a.npy")
    os.symlink(folder / "loop_a.npy", folder / "loop_b.npy")
    os.symlink(".", folder / "self.npy")  # a folder loop with an image's name
    os.symlink("..", folder / "up")  # a folder loop without one: not even listed
    return {
        "huge_header.npy": "header claims",
        "sparse.npy": "the limit is",
        "pipe.npy": "not a regular file (a FIFO)",
        "folder.npy": "not a regular file (a folder)",
        "dangling.npy": "dangling symlink",
        "loop_a.npy": "symlink loop",
        "loop_b.npy": "symlink loop",
        "self.npy": "not a regular file (a folder)",
    }


def load_without_blocking(*args, **kwargs) -> LensingDataset:
    """LensingDataset(*args, **kwargs) in a thread; fails the test if it blocks on a FIFO."""
    result = []
    worker = threading.Thread(target=lambda: result.append(LensingDataset(*args, **kwargs)))
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader so the test run can end
        for fifo in Path(args[0]).rglob("pipe.npy"):
            with open(fifo, "wb"):
                pass
        pytest.fail("LensingDataset blocked on a FIFO")
    assert result, "LensingDataset raised in its thread"
    return result[0]


@pytest.mark.parametrize("in_memory", [True, False])
def test_hostile_entries_are_skipped_never_fatal(tmp_path, in_memory, write_set):
    root = write_set(tmp_path, {"train": 2, "val": 2, "test": 1})
    expected = hostile_entries(root / "val" / "no")
    with pytest.warns(DataWarning, match="skipped"):
        direct = LensingDataset(root, "val", cache=False, progress=False)
    for attempt in ("first load", "from the cache"):
        with pytest.warns(DataWarning, match=f"skipped {len(expected)} of {6 + len(expected)}"):
            ds = load_without_blocking(root, "val", in_memory=in_memory, progress=False)
        reasons = {p.name: why for p, why in ds.skipped}
        assert reasons.keys() == expected.keys(), attempt
        for name, words in expected.items():
            assert words in reasons[name], (attempt, name, reasons[name])
        assert ds.class_counts() == {"no": 2, "sphere": 2, "vort": 2}
        assert ds.files == direct.files
        assert all(torch.equal(ds[i][0], direct[i][0]) for i in range(len(ds)))
    assert len(list((root / CACHE_DIR).glob("val-*.json"))) == 1


def test_cache_is_rebuilt_when_a_dangling_link_comes_to_life(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 2, "val": 2, "test": 1})
    os.symlink(tmp_path / "later.npy", root / "val" / "vort" / "3.npy")
    with pytest.warns(DataWarning, match="dangling symlink"):
        before = LensingDataset(root, "val", progress=False)
    np.save(tmp_path / "later.npy", np.random.default_rng(5).random(SHAPE))
    after = LensingDataset(root, "val", progress=False, balance_tolerance=1)
    assert len(before) == 6 and len(after) == 7 and after.skipped == []
    assert_allclose(after.images[6].numpy(), load_image(tmp_path / "later.npy"))


def test_damaged_cache_is_rebuilt_not_trusted(small_set):
    direct = LensingDataset(small_set, "val", cache=False, progress=False)
    LensingDataset(small_set, "val", progress=False)
    (index,) = (small_set / CACHE_DIR).glob("val-*.json")
    images = index.with_suffix(".npy")
    for damage in (b"{not json", b'{"version": 2, "files": 3}', b"[]"):
        index.write_bytes(damage)
        assert torch.equal(LensingDataset(small_set, "val", progress=False).images, direct.images)
    images.write_bytes(images.read_bytes()[:1000])  # a truncated image cache
    assert torch.equal(LensingDataset(small_set, "val", progress=False).images, direct.images)
    np.save(images, np.zeros((2, *SHAPE), np.float32))  # a cache of the wrong size
    assert torch.equal(LensingDataset(small_set, "val", progress=False).images, direct.images)


def test_damaged_test_split_record_is_a_clear_error(tmp_path, write_set):
    root = write_set(tmp_path, {"train": 10, "val": 1})
    split_off_test_set(root)
    (root / TEST_SPLIT_FILE).write_text('{"test": 5}')
    with pytest.raises(ValueError, match=f"unreadable test split record {root / TEST_SPLIT_FILE}"):
        split_off_test_set(root)


def test_fits_files_are_part_of_a_split(tmp_path, write_set):
    from astropy.io import fits

    root = write_set(tmp_path, {"train": 2, "val": 1, "test": 1})
    image = np.load(root / "val" / "no" / "1.npy").reshape(IMAGE_SIZE, IMAGE_SIZE)
    fits.PrimaryHDU(image * 40 + 3).writeto(root / "val" / "no" / "2.fits")
    ds = LensingDataset(root, "val", progress=False, balance_tolerance=9)
    assert [p.name for p in ds.files[:2]] == ["1.npy", "2.fits"]
    assert_allclose(ds.images[1].numpy(), ds.images[0].numpy(), atol=1e-6)


def test_train_batches_of_a_pair_cover_every_image():
    import torch

    from lensing.data.batches import TrainBatches

    images, labels = torch.zeros(10, 1, 4, 4), torch.arange(10)
    batches = TrainBatches(
        (images, labels), 4, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    seen = torch.cat([y for _, y in batches])
    assert len(batches) == 3 and sorted(seen.tolist()) == list(range(10))


def test_a_stratified_subset_keeps_each_class_equally_and_the_same_files(write_set, tmp_path):
    from lensing.data.dataset import LensingDataset, load_splits
    from lensing.data.splits import find_split_files, stratified_subset

    root = write_set(tmp_path / "set", {"train": 6, "val": 3, "test": 3})
    files = find_split_files(root, "train")
    three = stratified_subset(files, 3, seed=0)
    assert [sum(y == k for _, y in three) for k in range(3)] == [3, 3, 3]
    assert three == stratified_subset(files, 3, seed=0)  # the same draw every time
    assert set(three) <= set(stratified_subset(files, 5, seed=0))  # larger keeps smaller
    assert three != stratified_subset(files, 3, seed=1)
    subset = LensingDataset(root, "train", per_class=2, progress=False)
    assert subset.class_counts() == {"no": 2, "sphere": 2, "vort": 2}
    splits = load_splits(root, per_class={"train": 4, "val": 1}, progress=False)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 3, 9]
    with pytest.raises(ValueError, match="expected an integer >= 1"):
        stratified_subset(files, 0)
    with pytest.raises(ValueError, match="expected some of"):
        load_splits(root, per_class={"tain": 4})
