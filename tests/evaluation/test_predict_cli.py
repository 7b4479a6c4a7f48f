"""``python -m lensing predict`` on the command line with a model trained here: ``--hdu`` picks the
FITS extension to classify, and the CSV is either its old whole self or the new whole file, even
when the write fails half way."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from lensing.cli import main
from lensing.core import atomic
from lensing.evaluation.predict import PROB_COLUMNS, write_predictions
from lensing.training.fit import TrainConfig, fit

pytestmark = pytest.mark.slow  # a training run and a `python -m lensing` process

REPO = Path(__file__).resolve().parents[2]
OLD_CSV = "path,predicted\nold.npy,no\n" * 5_000  # longer than any new file here
CPU = ["--device", "cpu", "--precision", "fp32", "--no-progress"]


@pytest.fixture(scope="module")
def model_and_inputs(tmp_path_factory, write_set) -> dict[str, Path]:
    """A checkpoint trained one epoch here (from random weights), and one test image of its set
    as a .npy and inside a FITS file's extension 1 (EXTNAME LENS), under a 10 x 10 primary
    image: something else that a reader which ignored --hdu would take."""
    root = tmp_path_factory.mktemp("predict")
    data = write_set(root / "set", {"train": 4, "val": 2, "test": 2})
    config = TrainConfig(
        data_dir=str(data),
        out_dir=str(root / "model"),
        epochs=1,
        pretrained="none",
        batch_size=4,
        device="cpu",
        precision="fp32",
    )
    checkpoint = Path(fit(config, progress=False)["best_checkpoint"])
    image = np.load(data / "test" / "sphere" / "1.npy").reshape(150, 150)
    inputs = root / "inputs"
    inputs.mkdir()
    np.save(inputs / "plain.npy", image)
    primary = fits.PrimaryHDU(np.random.default_rng(0).random((10, 10)))
    fits.HDUList([primary, fits.ImageHDU(image, name="LENS")]).writeto(inputs / "lens.fits")
    return {"checkpoint": checkpoint, "fits": inputs / "lens.fits", "npy": inputs / "plain.npy"}


def read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in PROB_COLUMNS})
    return frame.set_index("path")


def predict(model_and_inputs, out: Path, *options: str) -> pd.DataFrame:
    """``predict`` in this process on the FITS file and the .npy; the CSV's rows by path."""
    files = [str(model_and_inputs["fits"]), str(model_and_inputs["npy"])]
    argv = ["predict", "--checkpoint", str(model_and_inputs["checkpoint"]), "--out", str(out)]
    assert main([*argv, *CPU, *options, *files]) == 0
    return read_csv(out)


def test_hdu_on_the_command_line_classifies_that_extension(model_and_inputs, tmp_path):
    out = tmp_path / "hdu1.csv"
    command = [sys.executable, "-m", "lensing", "predict", "--checkpoint"]
    command += [str(model_and_inputs["checkpoint"]), "--hdu", "1", "--out", str(out), *CPU]
    command += [str(model_and_inputs["fits"]), str(model_and_inputs["npy"])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    frame = read_csv(out)
    lens, plain = frame.loc[str(model_and_inputs["fits"])], frame.loc[str(model_and_inputs["npy"])]
    assert lens["error"] == "" and plain["error"] == ""
    # The extension's pixels are the .npy's: the same probabilities, to the last bit.
    assert lens[list(PROB_COLUMNS)].tolist() == plain[list(PROB_COLUMNS)].tolist()
    assert lens["predicted"] == plain["predicted"]

    # By name, the same extension; without --hdu the reader takes the primary (10 x 10) and
    # refuses it; --hdu 0 asks for that primary and is refused the same way.
    by_name = predict(model_and_inputs, tmp_path / "lens.csv", "--hdu", "LENS")
    assert by_name.loc[str(model_and_inputs["fits"]), list(PROB_COLUMNS)].tolist() == (
        lens[list(PROB_COLUMNS)].tolist()
    )
    for options in ([], ["--hdu", "0"]):
        rows = predict(model_and_inputs, tmp_path / "default.csv", *options)
        refusal = rows.loc[str(model_and_inputs["fits"]), "error"]
        assert (
            "10x10" in refusal
            and rows.loc[str(model_and_inputs["fits"]), list(PROB_COLUMNS)].isna().all()
        )
        assert rows.loc[str(model_and_inputs["npy"]), "error"] == ""


class DiskFull:
    """``os`` for lensing.core.atomic, but every file it opens takes half of the first write and
    then fails as a full disk does (ENOSPC); or, with ``at="replace"``, the rename fails."""

    def __init__(self, at: str = "write") -> None:
        self.at = at
        self.written = 0
        self.os = types.ModuleType("os")
        self.os.__dict__.update(vars(os))
        self.os.fdopen = self.fdopen
        self.os.replace = self.replace

    def fdopen(self, fd, *args, **kwargs):
        file = os.fdopen(fd, *args, **kwargs)
        if self.at != "write":
            return file
        spy = self

        class HalfWritten:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                file.close()

            def write(self, data):
                spy.written = file.write(data[: len(data) // 2])
                file.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(file, name)

        return HalfWritten()

    def replace(self, src, dst):
        if self.at == "replace":
            self.written = os.path.getsize(src)
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return os.replace(src, dst)


@pytest.mark.parametrize("at", ["write", "replace"])
def test_a_csv_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(
    model_and_inputs, tmp_path, monkeypatch, at
):
    frame = predict(model_and_inputs, tmp_path / "first.csv").reset_index()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "predictions.csv"
    out.write_text(OLD_CSV)
    failing = DiskFull(at)
    monkeypatch.setattr(atomic, "os", failing.os)
    with pytest.raises(OSError, match="No space left|cross-device"):
        write_predictions(frame, out)
    assert failing.written > 0  # the failure came with part of the new file on disk
    assert out.read_text() == OLD_CSV
    assert os.listdir(out_dir) == ["predictions.csv"]

    monkeypatch.setattr(atomic, "os", os)  # and the next write replaces it whole
    write_predictions(frame, out)
    assert os.listdir(out_dir) == ["predictions.csv"]
    pd.testing.assert_frame_equal(
        read_csv(out).reset_index(), read_csv(tmp_path / "first.csv").reset_index()
    )


def test_predict_says_it_cannot_write_and_keeps_the_old_csv(
    model_and_inputs, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "predictions.csv"
    out.write_text(OLD_CSV)
    monkeypatch.setattr(atomic, "os", DiskFull().os)
    argv = [
        "predict",
        "--checkpoint",
        str(model_and_inputs["checkpoint"]),
        "--out",
        str(out),
        *CPU,
    ]
    assert main([*argv, str(model_and_inputs["npy"])]) == 1
    assert f"cannot write {out}" in capsys.readouterr().err
    assert out.read_text() == OLD_CSV
    assert os.listdir(tmp_path) == ["predictions.csv"]
