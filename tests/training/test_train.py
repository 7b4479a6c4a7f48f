"""Training: config, optimizer groups, batches, checkpoints, resume, the command line."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from lensing.cli import main
from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.data.batches import TrainBatches
from lensing.data.dataset import LensingDataset
from lensing.model.checkpoint import (
    BEST_MODEL,
    CHECKPOINT,
    CONFIG_JSON,
    TRAINING_KEYS,
    CheckpointError,
    load_checkpoint,
)
from lensing.model.network import build_model, layer_groups
from lensing.training.fit import TrainConfig, _patience_exhausted, fit
from lensing.training.optim import make_optimizer, make_scheduler


def cli(argv: list[str]) -> int:
    return main(["train", *argv])


TIMING_FIELDS = {"seconds", "images_per_s"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, write_set) -> Path:
    """8 train, 4 val and 1 test image per class with a learnable class pattern."""
    return write_set(tmp_path_factory.mktemp("data"), {"train": 8, "val": 4, "test": 1})


@pytest.fixture(scope="module")
def datasets(data_root) -> dict[str, LensingDataset]:
    return {split: LensingDataset(data_root, split, progress=False) for split in ("train", "val")}


def make_config(data_root: Path, out_dir: Path, **changes) -> TrainConfig:
    values = dict(
        data_dir=data_root,
        out_dir=out_dir,
        epochs=3,
        batch_size=4,
        lr_early=1e-3,
        lr_middle=1e-3,
        lr_late=1e-3,
        lr_fc=1e-3,
        pretrained="none",
        precision="fp32",
        augment="seed",  # so that resuming must also restore the augmentation generator
        schedule="plateau",  # the per-epoch schedule these tests check; one-cycle has its own
        device="cpu",
        seed=0,
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, data_root, datasets):
    """Three epochs in one go."""
    out = tmp_path_factory.mktemp("straight")
    config = make_config(data_root, out, epochs=3)
    return config, fit(config, datasets, progress=False)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory, data_root, datasets):
    """The same run stopped after two epochs."""
    out = tmp_path_factory.mktemp("two_epochs")
    config = make_config(data_root, out, epochs=2)
    return config, fit(config, datasets, progress=False)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# ----------------------------------------------------------------------------- config


def test_config_from_dict_round_trips_and_refuses_unknown_keys(tmp_path):
    config = make_config(tmp_path, tmp_path / "out")
    values = dataclasses.asdict(config)
    assert TrainConfig.from_dict(json.loads(json.dumps(values))) == config
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['learning_rate'\]"):
        TrainConfig.from_dict({**values, "learning_rate": 0.1})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"precision": "fp64"}, "precision"),
        ({"augment": "mixup"}, "augment"),
        ({"lr_fc": -1.0}, "lr_fc"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 2.5}, "epochs"),
        ({"scheduler_factor": 1.0}, "scheduler_factor"),
        ({"schedule": "cosine"}, "schedule"),
        ({"onecycle_warmup": 0.0}, "onecycle_warmup"),
    ],
)
def test_config_refuses_bad_values(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, tmp_path, **change)


def test_each_layer_group_gets_its_own_learning_rate(tmp_path):
    lrs = {"lr_early": 1e-5, "lr_middle": 2e-5, "lr_late": 3e-4, "lr_fc": 4e-3}
    config = make_config(tmp_path, tmp_path, **lrs)
    assert config.learning_rates() == {g: lrs[f"lr_{g}"] for g in LAYER_GROUPS}
    model = build_model("none")
    optimizer = make_optimizer(model, config.learning_rates())
    groups = layer_groups(model)
    assert [g["name"] for g in optimizer.param_groups] == list(LAYER_GROUPS)
    for group in optimizer.param_groups:
        assert group["lr"] == lrs[f"lr_{group['name']}"]
        assert [id(p) for p in group["params"]] == [id(p) for p in groups[group["name"]]]


def test_one_cycle_warms_up_to_each_groups_lr_then_decays(tmp_path):
    lrs = {"lr_early": 1e-4, "lr_middle": 2e-4, "lr_late": 5e-4, "lr_fc": 1e-3}
    config = make_config(tmp_path, tmp_path, schedule="onecycle", **lrs)
    optimizer = make_optimizer(build_model("none"), config.learning_rates())
    scheduler = make_scheduler(optimizer, config.schedule, 20, config.learning_rates())
    seen = []
    for _ in range(20):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    peaks = [lrs[f"lr_{g}"] for g in LAYER_GROUPS]
    assert seen[0] == pytest.approx([p / 25 for p in peaks])
    top = max(range(20), key=lambda i: seen[i][0])
    assert top == round(0.25 * 20) - 1  # the warm-up is the first quarter of the steps
    assert seen[top] == pytest.approx(peaks)
    assert seen[-1] < seen[top] and seen[-1][3] < 1e-3 / 25
    with pytest.raises(ValueError, match="at least 2 steps"):
        make_scheduler(optimizer, config.schedule, 1, config.learning_rates())


def test_patience_counts_epochs_since_the_best_val_auc():
    history = [{"val_auc": a} for a in (0.6, 0.8, 0.7, 0.75)]
    assert not _patience_exhausted(history, 0)
    assert not _patience_exhausted(history, 3)
    assert _patience_exhausted(history, 2)
    assert not _patience_exhausted([], 1)


# ----------------------------------------------------------------------------- batches


def test_in_memory_batches_cover_the_split_once_in_a_seeded_order(datasets):
    train = datasets["train"]

    def one_epoch(seed):
        batches = TrainBatches(train, 5, torch.Generator().manual_seed(seed), torch.device("cpu"))
        return [(x, y) for x, y in batches]

    epoch = one_epoch(0)
    assert len(epoch) == -(-len(train) // 5)
    images = torch.cat([x for x, _ in epoch])
    labels = torch.cat([y for _, y in epoch])
    # Every image exactly once, each with its own label.
    index = [int(torch.nonzero((train.images == img).flatten(1).all(1))[0]) for img in images]
    assert sorted(index) == list(range(len(train)))
    assert torch.equal(labels, train.labels[index])
    again = one_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, again, strict=True))
    other = one_epoch(1)
    assert not torch.equal(images, torch.cat([x for x, _ in other]))


def test_lazy_dataset_goes_through_a_dataloader(data_root):
    lazy = LensingDataset(data_root, "val", in_memory=False, progress=False)
    batches = TrainBatches(
        lazy, 4, torch.Generator().manual_seed(0), torch.device("cpu"), num_workers=0
    )
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == sorted(lazy.labels.tolist())


# ----------------------------------------------------------------------------- checkpoints


def test_missing_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pth does not exist"):
        load_checkpoint(tmp_path / "missing.pth")

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(junk)

    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="tensor.pth holds a Tensor"):
        load_checkpoint(tensor)

    partial = tmp_path / "partial.pth"
    torch.save({"model": build_model("none").state_dict(), "epoch": 1}, partial)
    with pytest.raises(CheckpointError, match=r"partial.pth lacks \['optimizer'"):
        load_checkpoint(partial, require=TRAINING_KEYS)
    assert load_checkpoint(partial)["epoch"] == 1  # enough for evaluation

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_checkpoint(truncated)

    pickled_code = tmp_path / "code.pth"
    torch.save({"model": {}, "fn": print}, pickled_code)  # not loadable with weights_only
    with pytest.raises(CheckpointError, match="code.pth"):
        load_checkpoint(pickled_code)


def test_resuming_from_a_corrupt_checkpoint_names_the_file(tmp_path, data_root, datasets):
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(CheckpointError, match=str(out / CHECKPOINT)):
        fit(make_config(data_root, out, resume=True), datasets, progress=False)


@pytest.mark.slow
def test_short_run_beats_chance_and_writes_loadable_files(straight_run):
    config, result = straight_run
    out = Path(config.out_dir)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert result["epochs_trained"] == 3 and result["start_epoch"] == 0
    assert result["pretrained"] is False
    # 12 validation images: chance is 0.5; the class pattern is learnable in a few steps.
    assert result["best_val_auc"] > 0.75
    for h in history:
        assert {"train_loss", "val_loss", "val_auc", "images_per_s", "seconds"} <= set(h)
    assert {g: history[0][f"lr_{g}"] for g in LAYER_GROUPS} == config.learning_rates()

    checkpoint = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(TRAINING_KEYS) | {"rng"} <= set(checkpoint)
    assert checkpoint["epoch"] == 3 and checkpoint["history"] == history
    assert checkpoint["config"] == dataclasses.asdict(config)

    best = torch.load(out / BEST_MODEL, map_location="cpu", weights_only=True)
    assert {"model", "config", "params", "classes", "val_auc", "epoch", "history"} <= set(best)
    aucs = [h["val_auc"] for h in history]
    assert best["val_auc"] == max(aucs) == result["best_val_auc"]
    assert best["epoch"] == aucs.index(max(aucs)) + 1
    assert best["params"] == config.learning_rates()
    assert best["classes"] == list(CLASSES) and best["pretrained"] is False
    build_model("none").load_state_dict(best["model"])

    assert json.loads((out / CONFIG_JSON).read_text()) == dataclasses.asdict(config)


@pytest.mark.slow
def test_resume_gives_the_same_history_as_an_uninterrupted_run(
    tmp_path, straight_run, two_epoch_run, datasets
):
    straight_config, straight = straight_run
    two_config, _ = two_epoch_run
    out = copy_run(Path(two_config.out_dir), tmp_path)
    config = dataclasses.replace(two_config, out_dir=str(out), epochs=3, resume=True)
    resumed = fit(config, datasets, progress=False)
    assert resumed["start_epoch"] == 2 and resumed["epochs_trained"] == 1
    assert len(resumed["history"]) == 3
    for a, b in zip(resumed["history"], straight["history"], strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING_FIELDS} == {
            k: v for k, v in b.items() if k not in TIMING_FIELDS
        }
    assert resumed["best_val_auc"] == straight["best_val_auc"]
    weights = load_checkpoint(out / CHECKPOINT)["model"]
    reference = load_checkpoint(Path(straight_config.out_dir) / CHECKPOINT)["model"]
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name

    # Asking again for the epochs already done trains nothing.
    again = fit(config, datasets, progress=False)
    assert again["epochs_trained"] == 0 and len(again["history"]) == 3


@pytest.mark.slow
def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    tmp_path, two_epoch_run, datasets, monkeypatch
):
    two_config, _ = two_epoch_run
    out = copy_run(Path(two_config.out_dir), tmp_path)
    before = {name: (out / name).read_bytes() for name in (CHECKPOINT, BEST_MODEL)}
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("disk full (test)")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    config = dataclasses.replace(two_config, out_dir=str(out), epochs=3, resume=True)
    with pytest.raises(OSError, match="disk full"):
        fit(config, datasets, progress=False)
    monkeypatch.undo()

    assert load_checkpoint(out / CHECKPOINT, require=TRAINING_KEYS)["epoch"] == 2
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
def test_an_error_from_on_epoch_end_comes_after_the_checkpoint(tmp_path, two_epoch_run, datasets):
    two_config, _ = two_epoch_run
    out = copy_run(Path(two_config.out_dir), tmp_path)
    seen = []

    def stop(epoch, entry):
        seen.append((epoch, entry["val_auc"]))
        raise RuntimeError("pruned (test)")

    config = dataclasses.replace(two_config, out_dir=str(out), epochs=4, resume=True)
    with pytest.raises(RuntimeError, match="pruned"):
        fit(config, datasets, progress=False, on_epoch_end=stop)
    checkpoint = load_checkpoint(out / CHECKPOINT, require=TRAINING_KEYS)
    assert checkpoint["epoch"] == 3
    assert seen == [(3, checkpoint["history"][-1]["val_auc"])]


# ----------------------------------------------------------------------------- command line


def test_cli_writes_its_config_and_reports_bad_values(tmp_path, data_root, capsys):
    out = tmp_path / "out"
    common = ["--data", str(data_root), "--out", str(out), "--pretrained", "none"]
    code = cli([*common, "--epochs", "0", "--lr-fc", "0.02", "--no-progress", "--device", "cpu"])
    assert code == 0
    saved = json.loads((out / CONFIG_JSON).read_text())
    assert saved["epochs"] == 0 and saved["lr_fc"] == 0.02 and saved["pretrained"] == "none"
    assert "no epoch trained" in capsys.readouterr().out

    assert cli([*common, "--epochs", "1", "--lr-early", "-1"]) == 2
    assert "lr_early" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli([*common, "--precision", "fp64"])


def test_a_named_recipe_sets_its_options_and_an_explicit_option_wins(tmp_path, data_root):
    out = tmp_path / "out"
    common = ["--data", str(data_root), "--out", str(out), "--pretrained", "none", "--epochs", "0"]
    assert cli([*common, "--recipe", "seed-notebook", "--device", "cpu"]) == 0
    saved = json.loads((out / CONFIG_JSON).read_text())
    assert (saved["augment"], saved["schedule"], saved["stretch"]) == (
        "flip-affine",
        "plateau",
        "none",
    )
    assert (saved["lr_early"], saved["lr_middle"]) == (1e-4, 3e-4)
    argv = [*common, "--recipe", "seed-notebook", "--augment", "d4", "--lr-early", "0.002"]
    assert cli(argv) == 0
    saved = json.loads((out / CONFIG_JSON).read_text())
    assert (saved["augment"], saved["lr_early"]) == ("d4", 0.002)


@pytest.mark.slow
def test_one_cycle_resumes_exactly_and_starts_a_new_cycle_for_more_epochs(
    tmp_path, data_root, datasets
):
    straight = fit(
        make_config(data_root, tmp_path / "a", schedule="onecycle"), datasets, progress=False
    )

    def stop_after_two(epoch, entry):
        if epoch == 2:
            raise KeyboardInterrupt

    config = make_config(data_root, tmp_path / "b", schedule="onecycle")
    with pytest.raises(KeyboardInterrupt):
        fit(config, datasets, on_epoch_end=stop_after_two, progress=False)
    resumed = fit(dataclasses.replace(config, resume=True), datasets, progress=False)
    assert resumed["start_epoch"] == 2
    for a, b in zip(resumed["history"], straight["history"], strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING_FIELDS} == {
            k: v for k, v in b.items() if k not in TIMING_FIELDS
        }
    # The learning rate went up and came back down within the three epochs.
    fc = [entry["lr_fc"] for entry in straight["history"]]
    assert fc[0] < fc[1] and fc[2] < fc[1]

    # Two more epochs than planned: a new cycle over them, starting again at lr / 25; when
    # that is interrupted too, the resume continues the new cycle instead of starting a third.
    def stop_after_four(epoch, entry):
        if epoch == 4:
            raise KeyboardInterrupt

    longer = dataclasses.replace(config, resume=True, epochs=5)
    with pytest.raises(KeyboardInterrupt):
        fit(longer, datasets, on_epoch_end=stop_after_four, progress=False)
    more = fit(longer, datasets, progress=False)
    assert more["start_epoch"] == 4
    assert more["history"][3]["lr_fc"] == pytest.approx(1e-3 / 25)
    assert more["history"][4]["lr_fc"] > 10 * 1e-3 / 25  # mid-cycle, not a fresh start
    steps = len(TrainBatches(datasets["train"], 4, torch.Generator(), torch.device("cpu")))
    state = load_checkpoint(tmp_path / "b" / CHECKPOINT, require=TRAINING_KEYS)
    assert state["scheduler"]["total_steps"] == state["scheduler"]["last_epoch"] == 2 * steps

    with pytest.raises(CheckpointError, match="schedule 'onecycle'"):
        fit(dataclasses.replace(config, resume=True, schedule="plateau"), datasets, progress=False)
