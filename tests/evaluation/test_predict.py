"""``python -m lensing predict`` and predict_files: one row per file, the same numbers as
evaluate, refusals as rows, the CSV written whole."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from numpy.testing import assert_allclose

from lensing.cli import main
from lensing.core.atomic import atomic_torch_save
from lensing.core.constants import CLASSES, IMAGE_SIZE
from lensing.core.metrics import compute_metrics
from lensing.data.dataset import LensingDataset
from lensing.evaluation.calibration import apply_temperature, logits_from_probs
from lensing.evaluation.evaluate import evaluate_checkpoint
from lensing.evaluation.predict import (
    CALIBRATED_COLUMNS,
    PROB_COLUMNS,
    predict_files,
    write_predictions,
)
from lensing.model.network import build_model

N = IMAGE_SIZE
ATOL = 1e-5


def cli(argv: list[str]) -> int:
    return main(["predict", *argv])


def tiny_checkpoint(path: Path) -> Path:
    """A ResNet18 with fixed random weights whose outputs differ clearly between images.

    A fresh network in eval mode gives nearly the same probabilities for every input; one
    batch in train mode (cumulative batch-norm averages) sets the normalization statistics,
    and a larger final layer spreads the probabilities, so equality tests compare numbers that
    depend on the image.
    """
    torch.manual_seed(0)
    model = build_model("none")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # the running statistics become those of the batch
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(0).random((4, 1, N, N), dtype=np.float32)))
        model.fc.weight.mul_(10)
    state = {"model": model.state_dict(), "classes": list(CLASSES), "config": {"stretch": "none"}}
    return atomic_torch_save(state, path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "best_model.pth")


def variant(checkpoint: Path, path: Path, stretch: str = "none", **extra) -> Path:
    """A copy of ``checkpoint`` with another stretch and extra entries (quicker than a new one)."""
    state = torch.load(checkpoint, weights_only=True)
    return atomic_torch_save(state | {"config": {"stretch": stretch}} | extra, path)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A float64 (150, 150) ring on noise, not normalized (values about 2 to 9)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:N, :N] - N / 2
    ring = np.exp(-(((np.hypot(yy, xx) - 30) / 3) ** 2))
    return 2 + 5 * ring + 2 * rng.random((N, N))


def probs_of(frame: pd.DataFrame, name: str) -> np.ndarray:
    row = frame[frame["path"].map(lambda p: Path(p).name) == name]
    assert len(row) == 1, f"{name}: {len(row)} rows"
    return row[list(PROB_COLUMNS)].to_numpy()[0]


def classify(checkpoint, inputs, **kwargs) -> pd.DataFrame:
    return predict_files(checkpoint, inputs, device="cpu", precision="fp32", **kwargs)


def test_every_layout_gives_the_probabilities_of_its_float_image(tmp_path, checkpoint, image):
    counts = np.round((image - 2) * 25).astype(np.int64)  # photon counts 0..225
    np.save(tmp_path / "reference.npy", image)
    np.save(tmp_path / "counts_reference.npy", counts.astype(np.float64))
    np.save(tmp_path / "f8_1hw.npy", image.reshape(1, N, N))
    np.save(tmp_path / "f4_hw.npy", image.astype(np.float32))
    np.save(tmp_path / "counts.npy", counts)
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, 2.5e-23  # DeepLenseSim: [image, axion mass]
    np.save(tmp_path / "deeplense.npy", pair, allow_pickle=True)
    fits.PrimaryHDU(image).writeto(tmp_path / "image.fits")
    frame = classify(checkpoint, tmp_path)
    assert (frame["error"] == "").all() and len(frame) == 7
    reference = probs_of(frame, "reference.npy")
    for name in ("f8_1hw.npy", "f4_hw.npy", "deeplense.npy", "image.fits"):
        assert_allclose(probs_of(frame, name), reference, atol=ATOL, err_msg=name)
    assert_allclose(
        probs_of(frame, "counts.npy"), probs_of(frame, "counts_reference.npy"), atol=ATOL
    )
    assert_allclose(frame[list(PROB_COLUMNS)].sum(axis=1), 1, atol=1e-6)
    assert set(frame["predicted"]) <= set(CLASSES)
    assert not set(CALIBRATED_COLUMNS) & set(frame.columns)  # no temperature, no pc_ columns


@pytest.mark.parametrize("tta", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_predict_equals_evaluate_on_a_split(tmp_path, trained, tta, monkeypatch):
    import lensing.evaluation.evaluate as evaluate_module

    # The probabilities evaluate scores, caught on their way into the metrics.
    scored = []
    real_metrics = evaluate_module.compute_metrics

    def spy(labels, probs, **kwargs):
        scored.append(np.array(probs))
        return real_metrics(labels, probs, **kwargs)

    monkeypatch.setattr(evaluate_module, "compute_metrics", spy)
    # A temperature stored the old way, fitted the same way: evaluate reuses it (no fit on val)
    # and writes it to calibration.json, whence predict adds the calibrated columns. The
    # model's input stretch is "log": predictions that skipped the checkpoint's preprocessing
    # would differ.
    checkpoint = trained.copy_checkpoint(tmp_path, temperature=1.7, temperature_tta=tta)
    per_class = {"test": 1 if tta else 2}  # TTA is 8 times the work
    metrics = evaluate_checkpoint(
        trained.root,
        checkpoint,
        out_dir=tmp_path / "reports",
        tta=tta,
        device="cpu",
        precision="fp32",
        n_bootstrap=0,
        explain=False,
        per_class=per_class,
    )
    written = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    dataset = LensingDataset(
        trained.root, "test", per_class=per_class["test"], cache=False, progress=False
    )
    calibration = tmp_path / "reports" / "calibration.json"
    frame = classify(checkpoint, dataset.files, tta=tta, batch_size=4, calibration=calibration)
    assert [Path(p) for p in frame["path"]] == dataset.files
    assert frame.attrs["temperature"].source == str(calibration)
    (expected,) = scored
    predicted = frame[list(PROB_COLUMNS)].to_numpy()
    assert_allclose(predicted, expected, atol=ATOL)
    assert np.ptp(expected, axis=0).max() > 0.1  # the probabilities really depend on the image
    assert list(frame["predicted"]) == [CLASSES[i] for i in expected.argmax(axis=1)]
    # What evaluate wrote is what predict's probabilities give.
    labels = dataset.labels.numpy()
    from_predict = compute_metrics(labels, predicted, n_bootstrap=0)
    assert written["n_images"] == len(frame) == 3 * per_class["test"]
    assert written["confusion_matrix"] == from_predict["confusion_matrix"]
    assert written["accuracy"] == from_predict["accuracy"] > 1 / 3
    for name, auc in from_predict["auc_per_class"].items():
        assert written["auc_per_class"][name] == pytest.approx(auc, abs=1e-9), name
    calibrated = apply_temperature(logits_from_probs(predicted), 1.7)
    assert metrics["calibration"]["temperature"] == 1.7
    assert_allclose(frame[list(CALIBRATED_COLUMNS)].to_numpy(), calibrated, rtol=1e-12)


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_gets_a_row_and_never_runs(tmp_path, checkpoint, image, capsys):
    marker = tmp_path / "pwned"
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, RunsShell(marker)
    np.save(tmp_path / "evil.npy", pair, allow_pickle=True)
    np.save(tmp_path / "good.npy", image)
    out = tmp_path / "predictions.csv"
    assert cli([str(tmp_path), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert not marker.exists()
    frame = read_csv(out)
    evil = frame[frame["path"].str.endswith("evil.npy")].iloc[0]
    assert "pickle wants" in evil["error"] and evil["predicted"] == ""
    assert np.isnan(evil[list(PROB_COLUMNS)].astype(float)).all()
    assert "classified 1 of 2 files, 1 refused" in capsys.readouterr().out


def test_nonfinite_pixels_with_and_without_fill(tmp_path, checkpoint, image):
    spoiled = image.copy()
    spoiled[10:12, 20:25] = np.nan
    np.save(tmp_path / "nan.npy", spoiled)
    refused = classify(checkpoint, tmp_path / "nan.npy")
    assert "10 of 22500 pixels are non-finite" in refused["error"][0]
    assert refused["predicted"][0] == "" and np.isnan(refused[list(PROB_COLUMNS)]).all(axis=None)
    np.save(tmp_path / "filled_by_hand.npy", np.nan_to_num(spoiled, nan=image.min()))
    filled = classify(checkpoint, tmp_path, fill_nonfinite=True)
    assert (filled["error"] == "").all()
    assert filled["notes"][filled["path"].str.endswith("nan.npy")].iloc[0].startswith("filled 10")
    assert_allclose(probs_of(filled, "nan.npy"), probs_of(filled, "filled_by_hand.npy"), atol=ATOL)


def test_small_image_with_and_without_resize(tmp_path, checkpoint, image):
    np.save(tmp_path / "small.npy", image[:64, :64])
    refused = classify(checkpoint, tmp_path / "small.npy")
    assert refused["error"][0].startswith("image of 64x64 pixels; expected 150x150")
    resized = classify(checkpoint, tmp_path / "small.npy", resize=True)
    assert resized["error"][0] == "" and resized["predicted"][0] in CLASSES
    # The checkpoint of this test holds no training profile: a second note says so.
    assert resized["notes"][0].startswith("resampled 64x64 -> 150x150 pixels")


def run_cli_without_blocking(argv: list[str], fifo: Path) -> int:
    """cli(argv) in a thread; fails the test if it blocks on ``fifo``."""
    result = []
    worker = threading.Thread(target=lambda: result.append(cli(argv)))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the test run can end
        with open(fifo, "wb"):
            pass
        pytest.fail("predict blocked on a FIFO")
    return result[0]


def test_folder_with_fifo_dangling_link_and_loop(tmp_path, checkpoint, image, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "1.npy", image)
    np.save(folder / "sub" / "2.npy", image[::-1])
    os.mkfifo(folder / "pipe.npy")
    os.symlink(tmp_path / "gone.npy", folder / "dangling.npy")
    os.symlink(folder, folder / "sub" / "loop")
    os.symlink(folder / "b.npy", folder / "a.npy")
    os.symlink(folder / "a.npy", folder / "b.npy")
    out = tmp_path / "out.csv"
    argv = [str(folder), str(tmp_path / "missing.npy"), "--checkpoint", str(checkpoint)]
    assert run_cli_without_blocking([*argv, "--out", str(out)], folder / "pipe.npy") == 0
    frame = read_csv(out)
    reasons = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["error"], strict=True))
    names = {"1.npy", "2.npy", "pipe.npy", "dangling.npy", "loop", "a.npy", "b.npy"}
    assert reasons.keys() == names | {"missing.npy"}
    assert reasons["1.npy"] == reasons["2.npy"] == ""
    assert frame["predicted"][:2].isin(CLASSES).all()  # the classified files come first
    assert "FIFO" in reasons["pipe.npy"] and "dangling symlink" in reasons["dangling.npy"]
    assert reasons["loop"].startswith("symlink loop")
    assert "symlink loop" in reasons["a.npy"] and "symlink loop" in reasons["b.npy"]
    assert reasons["missing.npy"] == "does not exist"
    assert "classified 2 of 8 files, 6 refused" in capsys.readouterr().out


def read_csv(path: Path) -> pd.DataFrame:
    """A predictions CSV as written: empty text stays empty, empty probabilities are NaN."""
    return pd.read_csv(
        path, keep_default_na=False, na_values={c: [""] for c in PROB_COLUMNS + CALIBRATED_COLUMNS}
    )


def test_csv_is_written_atomically_and_replaces_the_old_one_whole(tmp_path, checkpoint, image):
    np.save(tmp_path / "1.npy", image)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "predictions.csv"
    out.write_text("stale,content\n" * 10_000)  # longer than the new file
    frame = classify(checkpoint, tmp_path / "1.npy")
    assert write_predictions(frame, out) == out
    assert os.listdir(out_dir) == ["predictions.csv"]  # no temporary file left behind
    back = read_csv(out)
    columns = ["path", "predicted", *PROB_COLUMNS, "error", "notes", "in_distribution"]
    assert list(back.columns) == columns
    # in_distribution reads back as text ("True", "False", "" when it cannot be checked).
    same = columns[:-1]
    pd.testing.assert_frame_equal(back[same], frame[same], check_exact=True)  # full precision
    as_text = frame["in_distribution"].map(lambda v: "" if v is None else str(v))
    assert back["in_distribution"].fillna("").astype(str).tolist() == as_text.tolist()
    assert "stale" not in out.read_text()


def test_summary_line_and_exit_code(tmp_path, checkpoint, image, capsys):
    np.save(tmp_path / "1.npy", image)
    np.save(tmp_path / "2.npy", image[:100, :100])
    spoiled = image.copy()
    spoiled[0, 0] = np.inf
    np.save(tmp_path / "3.npy", spoiled)
    np.save(tmp_path / "4.npy", np.full((N, N), 4.0))
    out = tmp_path / "p.csv"
    argv = [str(tmp_path), "--checkpoint", str(checkpoint), "--out", str(out), "--resize"]
    assert cli([*argv, "--fill-nonfinite", "--batch-size", "2", "--no-progress"]) == 0
    frame = read_csv(out)
    counts = {name: int((frame["predicted"] == name).sum()) for name in CLASSES}
    per_class = ", ".join(f"{name} {n}" for name, n in counts.items())
    expected = (
        f"classified 3 of 4 files, 1 refused; predicted {per_class}; 1 resized, "
        f"1 with non-finite pixels filled; wrote {out}"
    )
    assert capsys.readouterr().out.strip().splitlines()[-1] == expected
    assert "constant image" in frame["error"][3]


def test_calibrated_columns_from_the_checkpoint_temperature(tmp_path, checkpoint, image):
    # A checkpoint into which an older version of evaluate stored its temperature.
    checkpoint = variant(checkpoint, tmp_path / "model.pth", temperature=2.5)
    np.save(tmp_path / "1.npy", image)
    np.save(tmp_path / "2.npy", image.T)
    (tmp_path / "3.npy").write_bytes(b"")
    frame = classify(checkpoint, tmp_path)
    columns = ["path", "predicted", *PROB_COLUMNS, *CALIBRATED_COLUMNS, "error", "notes"]
    assert list(frame.columns) == [*columns, "in_distribution"]
    p = frame[list(PROB_COLUMNS)].to_numpy()[:2]
    calibrated = frame[list(CALIBRATED_COLUMNS)].to_numpy()
    expected = np.exp(np.log(p) / 2.5)
    assert_allclose(calibrated[:2], expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)
    assert np.isnan(calibrated[2]).all()  # the refused empty file has none
    assert (calibrated[:2].max(axis=1) < p.max(axis=1)).all()  # T > 1 tempers confidence
    assert frame.attrs["temperature"].source == "checkpoint"


def test_failures_that_stop_the_run_have_their_exit_codes(tmp_path, checkpoint, image, capsys):
    np.save(tmp_path / "1.npy", image)
    out = tmp_path / "p.csv"
    args = [str(tmp_path / "1.npy"), "--out", str(out)]
    assert cli([*args, "--checkpoint", str(tmp_path / "none.pth")]) == 1
    assert "checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert cli([*args, "--checkpoint", str(tmp_path / "junk.pth")]) == 1
    (tmp_path / "empty").mkdir()
    assert cli([str(tmp_path / "empty"), "--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    assert "no image file under" in capsys.readouterr().err
    assert cli([*args, "--checkpoint", str(checkpoint), "--device", "warp"]) == 2
    assert "unknown device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli([*args, "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert not out.exists()  # nothing is written by a run that did not classify
