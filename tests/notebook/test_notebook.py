"""The notebook, executed end to end with papermill on a tiny simulated set; run again on a
complete search, without the search, and after a kill in the middle of one.

Besides the results, the executed notebook's outputs are checked as a person would see them in
JupyterLab: each figure an inline PNG in the cell that makes it, no ``<Figure size ...>`` text
in place of one, no progress bar frozen at ``0%|``, and the no-ImageNet-weights message once.
"""

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lensing.cli.run import run_notebook
from lensing.core.constants import CLASSES
from lensing.model.lensing_weights import weights_label
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
    "no ImageNet weights"  # how lensing.model.network says it fell back to the lensing weights
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


@pytest.fixture(scope="module")
def searched(module_tmp) -> dict:
    """One full run of the notebook on a tiny simulated set: its folder, parameters, executed
    notebook, metrics and the files it trained (with their modification times)."""
    tmp_path = module_tmp("notebook")
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_torch_hub(monkeypatch, tmp_path)
        parameters = tiny_parameters(tmp_path)
        executed = execute(tmp_path, **parameters)
    trained = sorted((tmp_path / "models" / "trials").glob("*/*/checkpoint.pth"))
    trained.append(tmp_path / "models" / "best_model.pth")
    return {
        "tmp_path": tmp_path,
        "parameters": parameters,
        "executed": executed,
        "metrics": json.loads((tmp_path / "reports" / "metrics.json").read_text()),
        "trained": {p: p.stat().st_mtime_ns for p in trained},
    }


def all_text(executed: dict) -> str:
    return "\n".join(output_text(o) for cell in executed["cells"] for o in cell.get("outputs", []))


def test_notebook_runs_end_to_end(searched):
    first = searched["executed"]
    tmp_path = searched["tmp_path"]
    text = check_outputs_as_seen(first)
    # Two trials, each building a model: the fallback is still said only once.
    assert text.count(WEIGHTS_MESSAGE) == 1
    classify = code_cell(first, "predict_files(best_path")
    html = "".join(
        "".join(o["data"].get("text/html", "")) for o in classify["outputs"] if "data" in o
    )
    assert "<table" in html, "the classify cell shows no table"
    assert html.split("<tbody>")[1].count("<tr>") == len(CLASSES)  # one row per image given

    metrics = searched["metrics"]
    assert metrics["data"] == "simulated" and metrics["pretrained"] is True
    assert metrics["weights"] == weights_label()  # the fallback, named in the results
    assert f"started from weights {weights_label()}" in all_text(first)
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
    assert len(searched["trained"]) == 3  # two combinations' checkpoints and the best model


def test_a_second_run_of_a_complete_search_trains_nothing(searched, monkeypatch):
    tmp_path = searched["tmp_path"]
    offline_torch_hub(monkeypatch, tmp_path)
    time.sleep(0.01)
    executed = execute(tmp_path, **searched["parameters"])
    assert {p: p.stat().st_mtime_ns for p in searched["trained"]} == searched["trained"]
    trials = sorted((tmp_path / "models" / "trials").glob("*/*/checkpoint.pth"))
    assert trials == sorted(p for p in searched["trained"] if p.name == "checkpoint.pth")
    text = check_outputs_as_seen(executed)
    assert "the search is complete: nothing to train" in text
    assert "training on" not in text


def test_without_the_search_it_evaluates_the_saved_model_and_trains_nothing(searched, monkeypatch):
    tmp_path = searched["tmp_path"]
    offline_torch_hub(monkeypatch, tmp_path)
    (tmp_path / "reports" / "metrics.json").unlink()
    time.sleep(0.01)
    executed = execute(tmp_path, **searched["parameters"], perform_grid_search=False)
    text = all_text(executed)
    assert "Using the model of an earlier search" in text
    assert "training on" not in text and "study 'lr_grid'" not in text  # no search, no fit
    assert {p: p.stat().st_mtime_ns for p in searched["trained"]} == searched["trained"]
    # The saved model, evaluated again on the same test set: the same numbers.
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["auc_macro"] == searched["metrics"]["auc_macro"]
    assert metrics["confusion_matrix"] == searched["metrics"]["confusion_matrix"]


# Runs the notebook as `make run` does, in a process of its own (and its kernel in another).
RUNNER = """
import json, sys
from pathlib import Path
from lensing.cli.run import run_notebook
run_notebook(json.loads(sys.argv[1]), out_dir=Path(sys.argv[2]))
"""


def kill_after_first_epoch(parameters: dict, out_dir: Path) -> Path:
    """Start the notebook; SIGKILL it and its kernel once the search's first rolling checkpoint
    is on disk (after epoch 1 of 2). Returns that checkpoint's path."""
    import psutil

    models = Path(parameters["models_dir"])
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(parameters), str(out_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while not (found := list(models.glob("trials/*/*/checkpoint.pth"))):
            assert runner.poll() is None, "the notebook ended before its first epoch"
            assert time.monotonic() < deadline, "no checkpoint after 400 s"
            time.sleep(0.05)
    finally:
        family = (
            psutil.Process(runner.pid).children(recursive=True) if runner.poll() is None else []
        )
        for process in [runner, *family]:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        runner.wait()
        psutil.wait_procs(family, timeout=30)
    return found[0]


def test_an_interrupted_search_resumes_from_its_last_finished_epoch(tmp_path):
    data = tmp_path / "simulated"
    simulate_dataset(data, {"train": 3, "val": 2, "test": 2}, seed=2, workers=1, progress=False)
    parameters = {
        **TINY_PARAMETERS,
        "grid": {"early": [1e-4], "middle": [1e-4], "late": [1e-3], "fc": [1e-3]},
        "epochs_per_combination": 2,
        "pretrained": "none",
        "data_dir": str(data),
        "models_dir": str(tmp_path / "models"),
        "reports_dir": str(tmp_path / "reports"),
    }
    checkpoint = kill_after_first_epoch(parameters, tmp_path / "killed")
    interrupted = torch.load(checkpoint, weights_only=True)
    assert interrupted["epoch"] == 1, "the run was not stopped after its first epoch"
    assert not (tmp_path / "reports" / "metrics.json").exists()

    executed = execute(tmp_path, **parameters)
    text = check_outputs_as_seen(executed)
    assert "0/1 combinations finished" in text
    assert "epochs 2..2" in text  # fit resumed after epoch 1 instead of starting over
    assert "epochs 1..2" not in text
    resumed = torch.load(checkpoint, weights_only=True)
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    # Epoch 1 is the interrupted run's own, timing included: it was not trained again.
    assert resumed["history"][0] == interrupted["history"][0]
    assert (tmp_path / "reports" / "metrics.json").is_file()
