"""benchmarks/gpu.py and benchmarks/gpu_run.sh on a CPU: the no-CUDA exit, and the tiny run.

No GPU figure is checked here: only that every step of the prepared GPU run works and writes
what it promises, so the command cannot rot between the rare sessions that have a GPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# benchmarks/ sits beside the installed package: importable from the repository root only.
sys.path.insert(0, str(REPO))

from benchmarks.gpu import NO_CUDA, main  # noqa: E402

CPU_ONLY = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2")


def run_gpu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=CPU_ONLY,
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
    assert main(["--device", "cpu", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "--device cpu without --tiny" in capsys.readouterr().err
    assert main(["--device", "mps", "--tiny", "--out", str(tmp_path / "gpu.json")]) == 2
    assert "expected a CUDA device, or cpu with --tiny" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_the_prepared_gpu_run_passes_in_its_tiny_cpu_mode(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=CPU_ONLY | {"PYTHON": sys.executable},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "gpu_run.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["cuda", "tests", "simulate", "benchmark"]
    assert all(s["exit"] == 0 for s in summary["steps"])
    # Without a GPU the CUDA tests are collected and skipped, none fails.
    tests = summary["cuda_tests"]
    assert tests["tests"] >= 5 and tests["skipped"] == tests["tests"]
    report = summary["benchmark"]
    assert report["suite"] == "tiny" and report["device"]["type"] == "cpu"
    (train,) = report["train"]
    assert train["batch_size"] == 4 and train["compile"] is False
    assert train["images"] == 12 and train["images_per_s"] > 0  # 3 batches of 4
    assert [r["d4"] for r in report["inference"]] == [False, True]
    full = report["full"]
    # 6 train images per class, 3 val, 3 test: the run trained, evaluated and scored them.
    assert full["images"] == {"train": 18, "val": 9} and full["test_images"] == 9
    assert full["epochs"] == 1 and 0.0 <= full["test_auc_macro"] <= 1.0
    log = (out / "gpu_run.log").read_text()
    marks = re.findall(r"^=== (cuda|tests|simulate|benchmark): ", log, flags=re.MULTILINE)
    assert len(marks) == 8  # the start and the end of each of the 4 steps
    assert "test macro AUC" in done.stdout
