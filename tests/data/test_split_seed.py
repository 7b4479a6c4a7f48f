"""The test share cut from train/ is drawn with the seed it is given."""

from __future__ import annotations

import shutil

from lensing.data.splits import relative_name, split_off_test_set
from lensing.simulate import simulate_dataset


def test_test_split_follows_seed(tmp_path):
    """One seed gives one split on fresh copies of a set; another seed gives another."""
    counts = {"train": 20, "val": 2, "test": 0}
    simulate_dataset(tmp_path / "d", counts, seed=1, workers=1, progress=False)
    tests = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        root = shutil.copytree(tmp_path / "d", tmp_path / name)
        split = split_off_test_set(root, seed=seed)
        tests[name] = sorted(relative_name(root, p) for p, _ in split["test"])
        assert tests[name], f"seed {seed}: no test split was cut"
    assert tests["a"] == tests["b"], "the same seed drew different test splits"
    assert tests["a"] != tests["c"], "seeds 7 and 8 drew the same test split"
