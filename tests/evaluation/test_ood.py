"""The training profile and the check of inputs against it: held-out images of the training
distribution pass, images of another kind are flagged on the right statistic, old checkpoints
still predict (and say they cannot check), the profile survives a weights-only load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lensing.cli import main
from lensing.core.atomic import atomic_torch_save
from lensing.core.constants import CLASSES, IMAGE_SIZE
from lensing.data.dataset import LensingDataset
from lensing.data.ood import (
    NO_PROFILE,
    PROFILE_KEY,
    STATISTICS,
    check_inputs,
    flagged_statistics,
    image_statistics,
    summarize,
    summary_line,
    training_profile,
)
from lensing.evaluation.evaluate import evaluate_checkpoint, out_of_distribution
from lensing.evaluation.predict import distribution_line, predict_files
from lensing.model.checkpoint import Checkpointer, load_checkpoint
from lensing.model.network import build_model
from lensing.simulate import simulate_dataset
from lensing.training.fit import TrainConfig, fit

N = IMAGE_SIZE
LABEL = {key: statistic.label for key, statistic in STATISTICS.items()}


def count_images(n: int, seed: int, *, noise: bool = True) -> np.ndarray:
    """(n, 1, 150, 150) float32 like the stand-in: arcs of a ring (radius 22-27 px, longer
    along x) of ~765 counts on a sky of 10 counts, as integer counts with Poisson noise
    (``noise``), min-max normalized. Without noise the sky is one constant value."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    images = np.empty((n, 1, N, N), dtype=np.float32)
    for start in range(0, n, 200):
        m = min(200, n - start)
        radius = rng.uniform(22, 27, (m, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (m, 1, 1))
        ring = np.exp(-(((np.hypot(xx / 1.15, yy) - radius) / 2.5) ** 2))
        arcs = 0.6 + 0.4 * np.cos(np.arctan2(yy, xx) - phase)
        light = 10.0 + rng.uniform(755, 775, (m, 1, 1)) * ring * arcs
        if noise:  # Poisson counts, in their normal approximation (faster to draw)
            noisy = light + np.sqrt(light) * rng.standard_normal(light.shape, dtype=np.float32)
            counts = np.maximum(np.round(noisy), 0.0)
        else:
            counts = light
        low = counts.min(axis=(1, 2), keepdims=True)
        high = counts.max(axis=(1, 2), keepdims=True)
        images[start : start + m, 0] = (counts - low) / (high - low)
    return images


@pytest.fixture(scope="module")
def profile() -> dict:
    """The profile of 1,500 training images."""
    return training_profile(torch.from_numpy(count_images(1500, seed=0)))


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    """400 more images of the same distribution."""
    return count_images(400, seed=1)


def flagged_on(notes: list[list[str]]) -> set[str]:
    """The labels of the statistics on which every image is flagged."""
    return set.intersection(*(set(flagged_statistics(n)) for n in notes))


def test_held_out_images_of_the_training_distribution_are_almost_never_flagged(profile, held_out):
    notes = check_inputs(profile, held_out)
    assert len(notes) == len(held_out)
    assert sum(bool(n) for n in notes) <= 0.01 * len(held_out)


def test_the_profile_is_plain_and_survives_a_weights_only_load(tmp_path, profile, held_out):
    assert profile["n_images"] == 1500
    assert set(profile["statistics"]) == set(STATISTICS)
    path = atomic_torch_save({PROFILE_KEY: profile}, tmp_path / "p.pth")
    loaded = torch.load(path, weights_only=True)[PROFILE_KEY]
    assert loaded == profile
    assert check_inputs(loaded, held_out[:50]) == check_inputs(profile, held_out[:50])


def test_many_zero_pixels_are_flagged_with_both_values(profile, held_out):
    blank = held_out[:20].copy()
    blank[blank < 0.015] = 0.0  # the sky of another simulator: exactly 0
    notes = check_inputs(profile, blank)
    assert LABEL["zero_share"] in flagged_on(notes)
    note = next(n for n in notes[0] if n.startswith(LABEL["zero_share"]))
    assert note.startswith("zero-pixel share 0.") and note.endswith(")")
    shown, training = note.removeprefix("zero-pixel share ").split(" (training ")
    assert float(shown) > 0.3 and float(training.rstrip(")").split()[-1]) < 0.01


def test_a_constant_sky_is_flagged_on_the_sky_noise(profile):
    notes = check_inputs(profile, count_images(20, seed=2, noise=False))
    assert LABEL["sky_noise"] in flagged_on(notes)


def test_rescaled_images_are_flagged(profile, held_out):
    dimmed = check_inputs(profile, held_out[:20] * 0.5)  # not min-max normalized
    assert {LABEL["mean"], LABEL["std"]} <= flagged_on(dimmed)
    # 1.5 x larger on the sky: the centre 100 x 100 px resampled to 150 x 150.
    centre = torch.from_numpy(held_out[:20, :, 25:125, 25:125])
    zoomed = torch.nn.functional.interpolate(centre, size=(N, N), mode="nearest")
    assert LABEL["ring_radius"] in flagged_on(check_inputs(profile, zoomed))


def test_statistics_of_a_split_in_any_form_agree(held_out):
    images = torch.from_numpy(held_out[:30])
    labels = torch.zeros(30, dtype=torch.long)
    direct = image_statistics(images)
    for form in (held_out[:30, 0], (images, labels), list(zip(images, labels, strict=True))):
        for key, values in image_statistics(form).items():
            np.testing.assert_array_equal(values, direct[key], err_msg=key)
    with pytest.raises(ValueError, match="got images of shape"):
        image_statistics(np.zeros((2, 3, N, N), dtype=np.float32))


def test_summary_line_counts_inputs_and_statistics(profile, held_out):
    blank = held_out[:3].copy()
    blank[blank < 0.015] = 0.0
    summary = summarize(check_inputs(profile, np.concatenate([blank, held_out[:2]])))
    assert summary["flagged"] == 3 and summary["n"] == 5
    assert summary["statistics"][LABEL["zero_share"]] == 3
    line = summary_line(summary)
    assert line.startswith("3 of 5 inputs lie outside the training data on: ")
    assert f"{LABEL['zero_share']} (3)" in line
    unchecked = summarize(check_inputs(None, held_out[:4]))
    assert unchecked == {"flagged": None, "n": 4, "statistics": {}}
    assert NO_PROFILE in summary_line(unchecked)


def tiny_checkpoint(path: Path, **extra) -> Path:
    """A ResNet18 of random weights, as best_model.pth holds it, plus ``extra`` entries."""
    torch.manual_seed(0)
    state = {"model": build_model("none").state_dict(), "classes": list(CLASSES)}
    return atomic_torch_save(state | {"config": {"stretch": "none"}} | extra, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, held_out) -> Path:
    """Two files of the training distribution (as counts, not normalized) and one with a blank
    sky."""
    folder = tmp_path_factory.mktemp("inputs")
    for i in range(2):
        np.save(folder / f"in{i}.npy", held_out[i, 0].astype(np.float64) * 770 + 3)
    blank = held_out[2, 0].copy()
    blank[blank < 0.015] = 0.0
    np.save(folder / "out.npy", blank)
    return folder


def test_predict_flags_inputs_outside_the_training_data(tmp_path, profile, files, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "best_model.pth", **{PROFILE_KEY: profile})
    frame = predict_files(checkpoint, files, device="cpu", precision="fp32")
    rows = frame.set_index(frame["path"].map(lambda p: Path(p).stem))
    assert rows.loc["in0", "in_distribution"] is True and rows.loc["in0", "notes"] == ""
    assert rows.loc["out", "in_distribution"] is False
    assert LABEL["zero_share"] in flagged_statistics(rows.loc["out", "notes"].split("; "))
    assert rows.loc["out", "predicted"] in CLASSES  # flagged, not refused
    assert distribution_line(frame).startswith("1 of 3 inputs lie outside the training data on:")
    out = tmp_path / "p.csv"
    argv = [str(files), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]
    assert main(["predict", *argv]) == 0
    assert "1 of 3 inputs lie outside the training data on: " in capsys.readouterr().out
    assert "in_distribution" in out.read_text().splitlines()[0]


def test_an_old_checkpoint_predicts_and_says_it_cannot_check(tmp_path, files):
    checkpoint = tiny_checkpoint(tmp_path / "old.pth")
    frame = predict_files(checkpoint, files, device="cpu", precision="fp32")
    assert frame["predicted"].isin(CLASSES).all()
    assert (frame["notes"] == NO_PROFILE).all()
    assert frame["in_distribution"].isna().all()
    assert NO_PROFILE in distribution_line(frame)


def test_evaluate_counts_the_flagged_images(profile, held_out):
    labels = torch.zeros(10, dtype=torch.long)
    blank = held_out[:10].copy()
    blank[:4][blank[:4] < 0.015] = 0.0
    split = (torch.from_numpy(blank), labels)
    counted = out_of_distribution({PROFILE_KEY: profile}, split)
    assert counted["flagged"] == 4 and counted["n"] == 10 and counted["rate"] == 0.4
    assert counted["statistics"][LABEL["zero_share"]] == 4
    assert out_of_distribution({}, split)["flagged"] is None


def test_checkpointer_stores_the_profile_of_the_train_split(tmp_path, held_out):
    train = (torch.from_numpy(held_out[:100]), torch.zeros(100, dtype=torch.long))
    saver = Checkpointer(tmp_path, TrainConfig(), False, train)
    saver.save_best(torch.nn.Linear(2, 3), 0.5, 1, [])
    stored = load_checkpoint(saver.best_path)[PROFILE_KEY]  # weights_only=True
    assert stored == training_profile(train)
    saver = Checkpointer(tmp_path / "none", TrainConfig(), False)
    saver.save_best(torch.nn.Linear(2, 3), 0.5, 1, [])
    assert PROFILE_KEY not in load_checkpoint(saver.best_path)


@pytest.mark.slow
def test_another_preset_is_flagged_and_held_out_images_are_not(tmp_path):
    counts = {"train": 100, "val": 1, "test": 50}
    simulate_dataset(tmp_path / "test-i", counts, workers=1, progress=False)
    legacy = {"train": 20, "val": 1, "test": 0}
    simulate_dataset(tmp_path / "legacy", legacy, workers=1, progress=False, preset="legacy")
    profile = training_profile(LensingDataset(tmp_path / "test-i", "train", progress=False))
    held = check_inputs(profile, LensingDataset(tmp_path / "test-i", "test", progress=False))
    assert sum(bool(n) for n in held) <= 0.01 * len(held)
    other = check_inputs(profile, LensingDataset(tmp_path / "legacy", "train", progress=False))
    assert all(other)  # every image, on the lens light at least
    assert LABEL["centre"] in flagged_on(other)


@pytest.mark.slow
def test_fit_stores_the_profile_and_evaluate_reports_it(tmp_path, write_set):
    data = write_set(tmp_path / "data", {"train": 4, "val": 2, "test": 2})
    config = TrainConfig(
        data_dir=data,
        out_dir=tmp_path / "run",
        epochs=1,
        batch_size=4,
        pretrained="none",
        precision="fp32",
        device="cpu",
    )
    result = fit(config, progress=False)
    best = load_checkpoint(result["best_checkpoint"])
    train = LensingDataset(data, "train", progress=False)
    assert best[PROFILE_KEY] == training_profile(train)
    assert load_checkpoint(result["checkpoint"])[PROFILE_KEY] == best[PROFILE_KEY]
    metrics = evaluate_checkpoint(
        data,
        result["best_checkpoint"],
        out_dir=tmp_path / "reports",
        device="cpu",
        precision="fp32",
        n_bootstrap=10,
        explain=False,
    )
    saved = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert saved["out_of_distribution"]["n"] == 6 == metrics["out_of_distribution"]["n"]
    assert saved["out_of_distribution"]["flagged"] <= 6
