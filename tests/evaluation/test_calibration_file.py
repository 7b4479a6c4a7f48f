"""evaluate leaves its checkpoint as it was and writes the fitted temperature to
``<out>/calibration.json``; predict takes the temperature from there only for the very
checkpoint file it was fitted for, and still honours one that an older evaluate stored inside
a checkpoint."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.special import softmax

import lensing.core.atomic
import lensing.evaluation.predict as predict_module
from lensing.cli import main
from lensing.evaluation.calibration import (
    fit_temperature,
    logits_from_probs,
    read_calibration,
    write_calibration,
)
from lensing.evaluation.evaluate import evaluate_checkpoint
from lensing.evaluation.predict import (
    CALIBRATED_COLUMNS,
    PROB_COLUMNS,
    calibration_line,
    predict_files,
)

OTHER_SHA256 = "0" * 64  # the hash of some other checkpoint
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_quietly(root: Path, checkpoint: Path, out: Path, **options) -> dict:
    """evaluate_checkpoint on the CPU in fp32, without the bootstrap and the saliency maps."""
    defaults = {"device": "cpu", "precision": "fp32", "n_bootstrap": 0, "explain": False}
    return evaluate_checkpoint(root, checkpoint, out_dir=out, **(defaults | options))


def classify(checkpoint: Path, inputs, **options):
    return predict_files(checkpoint, inputs, device="cpu", precision="fp32", **options)


def forbid_writing(monkeypatch, path: Path) -> None:
    """Make every way of writing ``path`` raise: torch.save and the atomic checkpoint writer
    (anywhere), opening it for writing, and renaming a file onto it (how atomic writes land).
    Root writes read-only files regardless of their mode: this is what proves no write."""
    target = path.absolute()

    def refuse(*args, **kwargs):
        raise AssertionError(f"evaluate tried to write {target}")

    def is_target(name) -> bool:
        return isinstance(name, str | os.PathLike) and Path(name).absolute() == target

    real_open, real_os_open = builtins.open, os.open
    real_replace, real_rename = os.replace, os.rename

    def guarded_open(file, mode="r", *args, **kwargs):
        if is_target(file) and set(mode) & set("wax+"):
            refuse()
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(file, flags, *args, **kwargs):
        if is_target(file) and flags & WRITE_FLAGS:
            refuse()
        return real_os_open(file, flags, *args, **kwargs)

    def guarded(real):
        def move(src, dst, *args, **kwargs):
            if is_target(dst) or is_target(src):
                refuse()
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(torch, "save", refuse)
    monkeypatch.setattr(lensing.core.atomic, "atomic_torch_save", refuse)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(os, "replace", guarded(real_replace))
    monkeypatch.setattr(os, "rename", guarded(real_rename))


@pytest.fixture
def no_default_reports(monkeypatch, tmp_path) -> Path:
    """predict's default reports folder, moved to an empty one of this test's: the project's
    own reports/calibration.json must not count."""
    reports = tmp_path / "default-reports"
    monkeypatch.setattr(predict_module, "REPORTS_DIR", reports)
    return reports


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_leaves_a_read_only_checkpoint_as_it_was(trained, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    checkpoint = trained.copy_checkpoint(folder)
    before = (sha256(checkpoint), checkpoint.stat().st_mtime_ns)
    checkpoint.chmod(0o444)
    folder.chmod(0o555)  # no temporary file beside it either
    try:
        with monkeypatch.context() as patch:
            forbid_writing(patch, checkpoint)
            metrics = evaluate_quietly(trained.root, checkpoint, tmp_path / "reports")
    finally:
        folder.chmod(0o755)
    assert (sha256(checkpoint), checkpoint.stat().st_mtime_ns) == before
    assert list(folder.iterdir()) == [checkpoint]

    record = read_calibration(tmp_path / "reports" / "calibration.json")
    on_val = fit_temperature(logits_from_probs(trained.probs["val"]), trained.labels["val"])
    assert record["temperature"] == pytest.approx(on_val, rel=1e-6)
    assert record["temperature"] == metrics["calibration"]["temperature"]
    assert record["checkpoint_sha256"] == before[0]
    assert record["checkpoint"] == str(checkpoint)
    assert record["split"] == "val" and record["n_images"] == len(trained.labels["val"])
    assert record["tta"] is False and record["source"] == "fitted"
    assert record["ece"] == metrics["calibration"]["ece"]
    assert record["ece_calibrated"] == metrics["calibration"]["ece_calibrated"]
    assert (record["ece_split"], record["ece_n_images"]) == ("test", metrics["n_images"])
    saved = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert saved["calibration"]["temperature"] == record["temperature"]


def test_what_evaluate_fits_predict_applies(trained, tmp_path, no_default_reports, capsys):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    metrics = evaluate_quietly(trained.root, checkpoint, tmp_path / "reports")
    temperature = metrics["calibration"]["temperature"]
    calibration = tmp_path / "reports" / "calibration.json"
    out = tmp_path / "p.csv"
    argv = ["predict", str(trained.root / "test"), "--checkpoint", str(checkpoint)]
    argv += ["--calibration", str(calibration), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--precision", "fp32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"calibrated with temperature {temperature:.4g} from {calibration}" in printed
    assert "fitted on val, 18 images, without TTA" in printed
    frame = pd.read_csv(out)
    p = frame[list(PROB_COLUMNS)].to_numpy()
    expected = softmax(np.log(p) / temperature, axis=1)
    assert_allclose(frame[list(CALIBRATED_COLUMNS)].to_numpy(), expected, rtol=1e-9)
    assert not np.allclose(expected, p, atol=1e-3)  # the calibration changes the numbers


# --- which temperature predict applies ---------------------------------------------------------


def test_a_calibration_file_beside_the_checkpoint_gives_the_calibrated_columns(
    trained, tmp_path, no_default_reports
):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    write_calibration(
        checkpoint.parent / "calibration.json",
        2.5,
        checkpoint_sha256=sha256(checkpoint),
        split="val",
        n_images=18,
        tta=True,
    )
    frame = classify(checkpoint, trained.root / "test")
    p = frame[list(PROB_COLUMNS)].to_numpy()
    calibrated = frame[list(CALIBRATED_COLUMNS)].to_numpy()
    assert_allclose(calibrated, softmax(np.log(p) / 2.5, axis=1), rtol=1e-12)
    assert (calibrated.max(axis=1) < p.max(axis=1)).all()  # T > 1 tempers confidence
    line = calibration_line(frame)
    assert line == (
        f"calibrated with temperature 2.5 from {checkpoint.parent / 'calibration.json'} "
        "(fitted on val, 18 images, with TTA): pc_no, pc_sphere, pc_vort"
    )


def test_the_default_reports_folder_is_searched_too(trained, tmp_path, no_default_reports):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    write_calibration(
        no_default_reports / "calibration.json", 0.5, checkpoint_sha256=sha256(checkpoint)
    )
    frame = classify(checkpoint, trained.root / "test" / "no")
    assert frame.attrs["temperature"].value == 0.5
    assert frame.attrs["temperature"].source == str(no_default_reports / "calibration.json")


def test_a_calibration_file_of_another_checkpoint_is_ignored_with_a_message(
    trained, tmp_path, no_default_reports, capsys
):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    beside = checkpoint.parent / "calibration.json"
    write_calibration(beside, 2.5, checkpoint_sha256=OTHER_SHA256, checkpoint="elsewhere.pth")
    out = tmp_path / "p.csv"
    argv = ["predict", str(trained.root / "test" / "no"), "--checkpoint", str(checkpoint)]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"ignored {beside}: fitted for another checkpoint file" in printed
    assert "elsewhere.pth" in printed and sha256(checkpoint)[:12] in printed
    assert "probabilities uncalibrated" in printed
    assert "pc_no" not in out.read_text().splitlines()[0]

    # Named on the command line, it is ignored all the same.
    assert main([*argv, "--out", str(out), "--device", "cpu", "--calibration", str(beside)]) == 0
    assert "fitted for another checkpoint file" in capsys.readouterr().out
    assert "pc_no" not in out.read_text().splitlines()[0]


def test_a_checkpoint_with_a_stored_temperature_still_calibrates(
    trained, tmp_path, no_default_reports
):
    # As older versions of evaluate left it: the temperature inside the checkpoint. A
    # calibration file of another checkpoint beside it does not get in the way.
    stored = {"temperature": 1.7, "temperature_tta": False}
    checkpoint = trained.copy_checkpoint(tmp_path / "model", **stored)
    beside = checkpoint.parent / "calibration.json"
    write_calibration(beside, 2.5, checkpoint_sha256=OTHER_SHA256)
    frame = classify(checkpoint, trained.root / "test")
    p = frame[list(PROB_COLUMNS)].to_numpy()
    assert_allclose(
        frame[list(CALIBRATED_COLUMNS)].to_numpy(), softmax(np.log(p) / 1.7, axis=1), rtol=1e-12
    )
    ignored, used = calibration_line(frame).splitlines()
    assert ignored.startswith(f"ignored {beside}: fitted for another checkpoint file")
    assert used == (
        "calibrated with temperature 1.7 stored in the checkpoint (fitted on val, without "
        "TTA): pc_no, pc_sphere, pc_vort"
    )

    # A calibration file of this very checkpoint comes first.
    write_calibration(beside, 2.5, checkpoint_sha256=sha256(checkpoint))
    assert classify(checkpoint, trained.root / "test" / "no").attrs["temperature"].value == 2.5


def test_without_a_temperature_predict_says_the_probabilities_are_uncalibrated(
    trained, tmp_path, no_default_reports
):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    frame = classify(checkpoint, trained.root / "test" / "no")
    assert not set(CALIBRATED_COLUMNS) & set(frame.columns)
    assert frame.attrs["temperature"].value is None
    assert calibration_line(frame).startswith("probabilities uncalibrated")


def test_a_named_calibration_file_that_cannot_be_read_stops_predict(
    trained, tmp_path, no_default_reports, capsys
):
    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    argv = ["predict", str(trained.root / "test" / "no"), "--checkpoint", str(checkpoint)]
    argv += ["--out", str(tmp_path / "p.csv"), "--device", "cpu", "--calibration"]
    assert main([*argv, str(tmp_path / "missing.json")]) == 1
    assert "cannot read calibration file" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    # The same junk where predict looks by default is passed over, with a message.
    (checkpoint.parent / "calibration.json").write_text("[1, 2]")
    frame = classify(checkpoint, trained.root / "test" / "no")
    assert frame.attrs["temperature"].value is None
    assert "holds a list" in calibration_line(frame)


# --- the file ----------------------------------------------------------------------------------


def test_calibration_files_are_checked_on_writing_and_reading(tmp_path):
    path = tmp_path / "calibration.json"
    written = write_calibration(path, 1.25, checkpoint_sha256="a" * 64, split="val")
    assert read_calibration(written) == {
        "temperature": 1.25,
        "checkpoint_sha256": "a" * 64,
        "split": "val",
    }
    bad = [
        ({"temperature": 0.0, "checkpoint_sha256": "a" * 64}, "temperature"),
        ({"temperature": True, "checkpoint_sha256": "a" * 64}, "temperature"),
        ({"temperature": 1.0}, "checkpoint_sha256"),
        ({"temperature": 1.0, "checkpoint_sha256": "A" * 64}, "checkpoint_sha256"),
    ]
    for record, word in bad:
        path.write_text(json.dumps(record))
        with pytest.raises(ValueError, match=word):
            read_calibration(path)
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        write_calibration(path, 1.0, checkpoint_sha256="not a hash")
    path.write_text("{")
    with pytest.raises(ValueError, match="cannot read calibration file"):
        read_calibration(path)
