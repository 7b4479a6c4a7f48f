"""The notebook, executed end to end with papermill on a tiny simulated set, twice."""

import json
import time

import pytest
import torch

from lensing.config import CLASSES
from lensing.run import run_notebook
from lensing.simulate import simulate_dataset

pytestmark = pytest.mark.slow


def execute(tmp_path, **parameters):
    """Run the notebook as `make run` does; return the executed notebook's JSON."""
    output = run_notebook(parameters, out_dir=tmp_path / "executed")
    return json.loads(output.read_text())


def test_notebook_runs_end_to_end_and_resumes_on_a_second_run(tmp_path):
    data = tmp_path / "simulated"
    simulate_dataset(data, {"train": 8, "val": 6, "test": 6}, seed=1, workers=1, progress=False)
    parameters = {
        "data_dir": str(data),
        "models_dir": str(tmp_path / "models"),
        "reports_dir": str(tmp_path / "reports"),
        "grid": {"early": [1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]},
        "epochs_per_combination": 1,
        "batch_size": 8,
        "pretrained": "none",
        "precision": "fp32",
        "tta": False,
    }
    execute(tmp_path, **parameters)

    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["data"] == "simulated" and metrics["pretrained"] is False
    assert 0 <= metrics["auc_macro"] <= 1 and set(metrics["auc_per_class"]) == set(CLASSES)
    assert all(0 <= a <= 1 for a in metrics["auc_per_class"].values())
    low, high = metrics["auc_macro_ci95"]
    assert 0 <= low <= high <= 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 18
    figures = tmp_path / "reports" / "figures"
    for name in ("samples", "search_heatmap", "training_history", "roc", "confusion_matrix"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    best = torch.load(tmp_path / "models" / "best_model.pth", weights_only=True)
    assert set(best["params"]) >= {"early", "middle", "late", "fc"}

    # Re-running resumes: both combinations are done, so nothing trains again.
    checkpoints = sorted((tmp_path / "models" / "trials").glob("*/*/checkpoint.pth"))
    assert len(checkpoints) == 2
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    time.sleep(0.01)
    executed = execute(tmp_path, **parameters)
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert sorted((tmp_path / "models" / "trials").glob("*/*/checkpoint.pth")) == checkpoints
    outputs = json.dumps([c.get("outputs", []) for c in executed["cells"]])
    assert "the search is complete: nothing to train" in outputs
