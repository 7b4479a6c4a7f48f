"""Checkpoints: safe loading, the Checkpointer's files, and resuming a run written in the
format of the releases before the input stretch and the flip-affine name existed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from lensing.core.atomic import atomic_torch_save
from lensing.model.checkpoint import (
    BEST_MODEL,
    CHECKPOINT,
    CONFIG_JSON,
    TRAINING_KEYS,
    CheckpointError,
    load_checkpoint,
)
from lensing.training.fit import TrainConfig, fit

# What a rolling checkpoint held before this layout, key by key; its config had no "stretch"
# and called the seed notebook's augmentation "seed".
OLD_ROLLING_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "epoch",
    "history",
    "best_val_auc",
    "config",
    "rng",
    "pretrained",
    "classes",
    "precision",
    "world_size",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, write_set) -> Path:
    return write_set(tmp_path_factory.mktemp("data"), {"train": 4, "val": 2, "test": 1})


def config(data_root: Path, out: Path, **changes) -> TrainConfig:
    values = dict(
        data_dir=data_root,
        out_dir=out,
        epochs=1,
        batch_size=4,
        pretrained="none",
        precision="fp32",
        device="cpu",
        augment="flip-affine",
    )
    return TrainConfig(**(values | changes))


def test_missing_truncated_and_foreign_files_are_named(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as missing:
        load_checkpoint(tmp_path / "nothing.pth")
    assert missing.value.path == tmp_path / "nothing.pth"
    truncated = tmp_path / "truncated.pth"
    atomic_torch_save({"model": {"w": torch.zeros(3)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    listed = tmp_path / "list.pth"
    atomic_torch_save([1, 2], listed)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(listed)
    not_weights = tmp_path / "not_weights.pth"
    atomic_torch_save({"model": {"w": [1.0]}}, not_weights)
    with pytest.raises(CheckpointError, match="not a state_dict of tensors"):
        load_checkpoint(not_weights)


def test_a_required_key_that_is_missing_is_an_error(tmp_path) -> None:
    path = tmp_path / "partial.pth"
    atomic_torch_save({"model": {"w": torch.zeros(2)}}, path)
    assert set(load_checkpoint(path)) == {"model"}
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path, require=TRAINING_KEYS)


def test_a_run_writes_config_best_and_rolling_files_in_the_documented_format(
    data_root, tmp_path
) -> None:
    fit(config(data_root, tmp_path), progress=False)
    rolling = load_checkpoint(tmp_path / CHECKPOINT, require=TRAINING_KEYS)
    assert OLD_ROLLING_KEYS <= set(rolling)
    assert rolling["config"]["stretch"] == "none"
    best = load_checkpoint(tmp_path / BEST_MODEL)
    assert {"model", "params", "classes", "val_auc", "epoch", "history", "pretrained"} <= set(best)
    assert (tmp_path / CONFIG_JSON).is_file()


def test_a_checkpoint_in_the_old_format_resumes_without_a_changed_config_warning(
    data_root, tmp_path
) -> None:
    fit(config(data_root, tmp_path, augment="seed"), progress=False)
    path = tmp_path / CHECKPOINT
    old = load_checkpoint(path, require=TRAINING_KEYS)
    old["config"].pop("stretch")
    old["config"]["augment"] = "seed"
    atomic_torch_save({key: old[key] for key in OLD_ROLLING_KEYS}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = fit(config(data_root, tmp_path, epochs=2, resume=True), progress=False)
    assert result["start_epoch"] == 1 and result["epochs_trained"] == 1
    assert TrainConfig.from_dict(old["config"]).augment == "flip-affine"


# A process that rewrites a run's rolling checkpoint in a loop with lensing's atomic save, as
# fit does after every epoch, and says when each write starts and ends (monotonic seconds).
REWRITER = """
import sys, time
from lensing.core.atomic import atomic_torch_save
from lensing.model.checkpoint import TRAINING_KEYS, load_checkpoint

path = sys.argv[1]
state = load_checkpoint(path, require=TRAINING_KEYS)
for i in range(1000):
    print("start", i, time.monotonic(), flush=True)
    atomic_torch_save(state, path)
    print("done", i, time.monotonic(), flush=True)
"""


def kill_mid_write(path: Path) -> None:
    """Run REWRITER on ``path`` and SIGKILL it half way through its second write."""
    writer = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        times = {}
        for line in writer.stdout:
            what, i, at = line.split()
            times[what, int(i)] = float(at)
            if ("start", 1) in times:
                break
        else:
            raise AssertionError(f"the writer stopped early (exit code {writer.wait()})")
        write_s = times["done", 0] - times["start", 0]
        time.sleep(write_s / 2)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_sigkill_mid_write_leaves_a_checkpoint_that_loads_and_resumes(data_root, tmp_path):
    fit(config(data_root, tmp_path), progress=False)
    path = tmp_path / CHECKPOINT
    before = torch.load(path, weights_only=True)
    assert path.stat().st_size > 50 * 2**20  # ResNet18 and Adam's moments: a long write

    kill_mid_write(path)
    state = torch.load(path, weights_only=True)  # the whole old (or new) checkpoint
    assert state["epoch"] == before["epoch"] == 1
    assert all(torch.equal(state["model"][k], v) for k, v in before["model"].items())
    leftovers = list(tmp_path.glob(f".{CHECKPOINT}.*.tmp"))
    assert len(leftovers) == 1, "the kill did not land inside a write"

    # The leftover is harmless: the next run resumes from the checkpoint beside it.
    leftover_size = leftovers[0].stat().st_size
    result = fit(config(data_root, tmp_path, epochs=2, resume=True), progress=False)
    assert result["start_epoch"] == 1 and result["epochs_trained"] == 1
    assert load_checkpoint(path, require=TRAINING_KEYS)["epoch"] == 2
    assert load_checkpoint(tmp_path / BEST_MODEL)["epoch"] in (1, 2)
    for leftover in leftovers:  # cleaned, or left as it was (hidden, and never read)
        assert not leftover.exists() or leftover.stat().st_size == leftover_size


def test_a_killed_writes_leftover_is_removed_once_it_is_old(tmp_path) -> None:
    from lensing.core.atomic import STALE_TMP_S
    from lensing.model.checkpoint import Checkpointer

    old = tmp_path / f".{CHECKPOINT}.abc123.tmp"
    young = tmp_path / f".{BEST_MODEL}.def456.tmp"
    other = tmp_path / ".notes.txt.ghi789.tmp"  # not a checkpoint's: never touched
    for leftover in (old, young, other):
        leftover.write_bytes(b"half a checkpoint")
    long_ago = time.time() - STALE_TMP_S - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    Checkpointer(tmp_path, TrainConfig(out_dir=str(tmp_path)), pretrained=False)
    assert not old.exists()
    assert young.exists() and other.exists()  # a young one may be a live writer's
