"""Tests for benchmarks/gpu.py: the no-CUDA exit, and the report's shape from the tiny CPU run.

No GPU figure is checked here: only that the code path runs and writes every key.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# benchmarks/ sits beside the installed package: importable from the repository root only.
sys.path.insert(0, str(REPO))

from benchmarks.gpu import AIM_MINUTES, ANCHOR_MINUTES, NO_CUDA, RUN, cli, estimate  # noqa: E402


def run_gpu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_without_cuda_it_says_so_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = run_gpu("--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == NO_CUDA  # one line, nothing else
    assert done.stdout == ""
    assert not out.exists()


def test_cpu_needs_tiny(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["--device", "cpu", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "--device cpu without --tiny" in capsys.readouterr().err
    assert cli(["--device", "mps", "--tiny", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "expected a CUDA device, or cpu with --tiny" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()


def test_estimate_adds_train_and_validation_time() -> None:
    train = [
        {"batch_size": 256, "compile": False, "images_per_s": 10_000.0},
        {"batch_size": 512, "compile": True, "images_per_s": 20_000.0},
    ]
    result = estimate(train, {"images_per_s": 50_000.0})
    assert result["best_train"] == train[1]
    # 30,000 / 20,000 + 7,500 / 50,000 = 1.65 s an epoch, 30 epochs = 0.825 min.
    assert result["epoch_seconds"] == pytest.approx(1.65)
    assert result["total_minutes"] == pytest.approx(0.825)
    assert result["meets_aim"] is True
    assert result["speedup_vs_anchor"] == pytest.approx(ANCHOR_MINUTES / 0.825)


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_key(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = run_gpu("--device", "cpu", "--tiny", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report) == {
        "profile", "device", "precision", "channels_last", "image_size", "train",
        "inference", "estimate", "seconds", "command",
    }  # fmt: skip
    assert report["profile"] == "tiny" and report["precision"] == "bf16"
    assert set(report["device"]) == {"type", "name", "torch", "cuda", "cudnn", "capability"}
    assert report["device"]["type"] == "cpu"
    (train,) = report["train"]
    assert train["batch_size"] == 4 and train["compile"] is False
    assert [r["d4"] for r in report["inference"]] == [False, True]
    for row in report["train"] + report["inference"]:
        assert row["steps"] >= 1 and row["seconds"] > 0
        assert row["images_per_s"] == pytest.approx(row["steps"] * 4 / row["seconds"])
    e = report["estimate"]
    assert {k: e[k] for k in RUN} == RUN
    assert (e["anchor_minutes"], e["aim_minutes"]) == (ANCHOR_MINUTES, AIM_MINUTES)
    expected = RUN["train_images"] / train["images_per_s"]
    expected += RUN["val_images"] / report["inference"][0]["images_per_s"]
    assert e["epoch_seconds"] == pytest.approx(expected)
    assert math.isfinite(e["total_minutes"]) and e["meets_aim"] is False  # a CPU, batch 4
    assert "ANCHOR" not in done.stdout and f"~{ANCHOR_MINUTES} min" in done.stdout
