"""The notebook, executed end to end with papermill on a tiny simulated set, twice.

Besides the results, the executed notebook's outputs are checked as a person would see them in
JupyterLab: each figure an inline PNG in the cell that makes it, no ``<Figure size ...>`` text
in place of one, no progress bar frozen at ``0%|``, and the no-ImageNet-weights message once.
"""

import json
import time
from pathlib import Path

import pytest
import torch

from lensing.cli.run import run_notebook
from lensing.constants import CLASSES
from lensing.simulate import simulate_dataset

pytestmark = pytest.mark.slow

# The figure cells, each known by a call in its source (the first cell that has it; cell ids
# are renumbered when outputs are stripped), and the PNG images it must show.
FIGURE_CELLS = {
    "plots.plot_samples(": 1,
    "plots.plot_search_heatmap(": 1,
    "plots.plot_history(": 1,
    "evaluate.evaluate_checkpoint(": 2,  # ROC curves and confusion matrix
}
WEIGHTS_MESSAGE = (
    "no ImageNet weights"  # how lensing.training.model says it fell back to random weights
)
TINY_PARAMETERS = {
    "grid": {"early": [1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]},
    "epochs_per_combination": 1,
    "batch_size": 8,
    "pretrained": "imagenet",
    "precision": "fp32",
    "tta": False,
}


def offline_torch_hub(monkeypatch, tmp_path: Path) -> None:
    """Make the kernel find no cached ImageNet weights and no network.

    An empty torch hub and a proxy on a closed local port: the download fails at once and for
    sure, so the fallback message is exercised without touching the internet.
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def tiny_parameters(tmp_path: Path) -> dict:
    """Simulate a tiny set in ``tmp_path``; the notebook parameters of a run on it."""
    data = tmp_path / "simulated"
    simulate_dataset(data, {"train": 8, "val": 6, "test": 6}, seed=1, workers=1, progress=False)
    return {
        **TINY_PARAMETERS,
        "data_dir": str(data),
        "models_dir": str(tmp_path / "models"),
        "reports_dir": str(tmp_path / "reports"),
    }


def execute(tmp_path: Path, **parameters) -> dict:
    """Run the notebook as `make run` does; return the executed notebook's JSON."""
    output = run_notebook(parameters, out_dir=tmp_path / "executed")
    return json.loads(output.read_text())


def output_text(output: dict) -> str:
    """Everything textual an output shows: a stream, a traceback, or a rich output's text."""
    if output["output_type"] == "stream":
        return "".join(output["text"])
    if output["output_type"] == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    kinds = ("text/plain", "text/html", "text/markdown")
    return "\n".join("".join(data[kind]) for kind in kinds if kind in data)


def code_cell(executed: dict, call: str) -> dict:
    """The first code cell whose source holds ``call``."""
    for cell in executed["cells"]:
        if cell["cell_type"] == "code" and call in "".join(cell["source"]):
            return cell
    raise AssertionError(f"no code cell calls {call!r}")


def check_outputs_as_seen(executed: dict) -> str:
    """Assert the executed notebook reads cleanly; return all of its output text."""
    for call, expected in FIGURE_CELLS.items():
        outputs = code_cell(executed, call)["outputs"]
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(pngs) == expected, f"the {call} cell shows {len(pngs)} PNG(s), not {expected}"
    text = "\n".join(output_text(o) for cell in executed["cells"] for o in cell.get("outputs", []))
    assert "<Figure size" not in text
    assert "0%|" not in text
    assert "Downloading" not in text
    assert text.count(WEIGHTS_MESSAGE) <= 1
    return text


def test_notebook_runs_end_to_end_and_resumes_on_a_second_run(tmp_path, monkeypatch):
    offline_torch_hub(monkeypatch, tmp_path)
    parameters = tiny_parameters(tmp_path)
    first = execute(tmp_path, **parameters)

    text = check_outputs_as_seen(first)
    # Two trials, each building a model: the fallback is still said only once.
    assert text.count(WEIGHTS_MESSAGE) == 1
    classify = code_cell(first, "classify_files(best_path")
    html = "".join(
        "".join(o["data"].get("text/html", "")) for o in classify["outputs"] if "data" in o
    )
    assert "<table" in html, "the classify cell shows no table"
    assert html.split("<tbody>")[1].count("<tr>") == len(CLASSES)  # one row per image given

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
    text = check_outputs_as_seen(executed)
    assert "the search is complete: nothing to train" in text
