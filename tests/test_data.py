import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_set
from numpy.testing import assert_array_equal

from lensing.config import CLASSES, IMAGE_SIZE
from lensing.data import (
    TEST_SPLIT_FILE,
    BadFileError,
    DataWarning,
    LensingDataset,
    check_balance,
    data_kind,
    find_split_files,
    load_image,
    load_splits,
    split_off_test_set,
)

SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("shape", [SHAPE, (IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1)])
def test_every_accepted_shape_loads_as_one_channel_float32(tmp_path, shape):
    root = write_set(tmp_path, {"train": 2, "val": 1, "test": 1}, shape=shape)
    ds = LensingDataset(root, "train", cache=False, progress=False)
    image, label = ds[0]
    assert image.shape == SHAPE and image.dtype == torch.float32
    raw = np.load(root / "train" / "no" / "1.npy").reshape(SHAPE)
    assert_array_equal(image.numpy(), raw.astype(np.float32))
    assert label == 0 and len(ds) == 6 and ds.skipped == []


def test_natural_order_and_labels(tmp_path):
    root = write_set(tmp_path, {"train": 11, "val": 1, "test": 1})
    files = find_split_files(root, "train")
    names = [p.name for p, y in files if y == 0]
    assert names == [f"{i}.npy" for i in range(1, 12)]  # 2.npy before 10.npy
    assert [y for _, y in files] == [0] * 11 + [1] * 11 + [2] * 11
    assert files == find_split_files(root, "train")  # deterministic


def bad_files(folder: Path) -> dict[str, str]:
    """Write one file of every bad kind; return name -> expected words in the reason."""
    good = np.zeros(SHAPE)
    (folder / "empty.npy").write_bytes(b"")
    np.save(folder / "whole.npy", good)
    raw = (folder / "whole.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    (folder / "whole.npy").unlink()
    np.save(folder / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (folder / "pickle.npy").write_bytes(pickle.dumps(good))
    np.save(folder / "shape.npy", np.zeros((3, IMAGE_SIZE, IMAGE_SIZE)))
    np.save(folder / "small.npy", np.zeros((1, 64, 64)))
    np.save(folder / "nan.npy", np.full(SHAPE, np.nan))
    np.save(folder / "inf.npy", np.full(SHAPE, np.inf))
    np.save(folder / "text.npy", np.array(["a"] * 3))
    (folder / "garbage.npy").write_bytes(os.urandom(500))
    return {
        "empty.npy": "empty",
        "truncated.npy": "truncated",
        "object.npy": "object array",
        "pickle.npy": "pickles are refused",
        "shape.npy": "shape",
        "small.npy": "shape",
        "nan.npy": "non-finite",
        "inf.npy": "non-finite",
        "text.npy": "non-numeric",
        "garbage.npy": "not a .npy file",
    }


def test_load_image_names_the_problem(tmp_path):
    for name, words in bad_files(tmp_path).items():
        with pytest.raises(BadFileError, match=words):
            load_image(tmp_path / name)


@pytest.mark.parametrize("in_memory", [True, False])
def test_bad_files_are_skipped_listed_and_summed_in_one_warning(tmp_path, in_memory):
    root = write_set(tmp_path, {"train": 3, "val": 3, "test": 1})
    expected = bad_files(root / "val" / "sphere")
    with pytest.warns(DataWarning, match=f"skipped {len(expected)} of {9 + len(expected)}"):
        ds = LensingDataset(root, "val", in_memory=in_memory, progress=False)
    assert {p.name: why for p, why in ds.skipped}.keys() == expected.keys()
    for path, why in ds.skipped:
        assert expected[path.name] in why
    assert len(ds) == 9 and ds.class_counts() == {"no": 3, "sphere": 3, "vort": 3}
    assert all(torch.isfinite(ds[i][0]).all() for i in range(len(ds)))


def test_missing_class_folder_and_empty_split_are_clear_errors(tmp_path):
    root = write_set(tmp_path, {"train": 2, "val": 1, "test": 1})
    for f in (root / "val").rglob("*.npy"):
        f.unlink()
    with pytest.raises(ValueError, match=f"no usable .npy file in {root / 'val'}"):
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


def test_unbalanced_split_warns(tmp_path):
    root = write_set(tmp_path, {"train": 5, "val": 1, "test": 1})
    for i in (1, 2, 3):
        (root / "train" / "no" / f"{i}.npy").unlink()
    with pytest.warns(DataWarning, match="unbalanced"):
        LensingDataset(root, "train", progress=False)


def test_test_split_cut_from_train_is_stratified_fixed_and_disjoint(tmp_path):
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


def test_empty_test_set_is_a_clear_error(tmp_path):
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
    np.save(target, np.ones(SHAPE))
    os.utime(target, ns=(1, 1))
    rebuilt = LensingDataset(small_set, "train", progress=False)
    assert torch.equal(rebuilt.images[5], torch.ones(SHAPE))
    assert len(list((small_set / ".cache").glob("train-*.npy"))) == 1


def test_lazy_mode_holds_no_images_and_reads_the_same(small_set):
    eager = LensingDataset(small_set, "val", progress=False)
    lazy = LensingDataset(small_set, "val", in_memory=False, progress=False)
    assert lazy.images is None and len(lazy) == len(eager)
    for i in range(len(lazy)):
        assert torch.equal(lazy[i][0], eager[i][0]) and lazy[i][1] == eager[i][1]


def test_data_kind_follows_the_manifest(small_set):
    assert data_kind(small_set) == "real"
    (small_set / "manifest.json").write_text("{}")
    assert data_kind(small_set) == "simulated"
    assert LensingDataset(small_set, "val", progress=False).kind == "simulated"
