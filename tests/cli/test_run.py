"""``make run`` (``python -m lensing run``): which data it uses, what it hands the notebook and
the plan it prints. The notebook itself is replaced by a recorder: tests/notebook runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lensing.cli import choice
from lensing.cli.run import BUDGETS, describe_plan
from lensing.core import constants

REPO = Path(__file__).resolve().parents[2]
TINY = {"train": 2, "val": 1, "test": 1}  # images per class the job simulates here

# ``python -m lensing run`` in a process of its own, with papermill's execute_notebook replaced
# by a function that records its arguments (and writes no notebook) and the quick budget's
# simulated set shrunk to TINY.
JOB = """
import json, sys
import papermill
from lensing.cli import main
from lensing.cli.run import BUDGETS

record, tiny = sys.argv[1], json.loads(sys.argv[2])

def execute_notebook(input_path, output_path, parameters=None, **options):
    with open(record, "w") as f:
        json.dump({"input": input_path, "output": output_path, "parameters": parameters,
                   "cwd": options.get("cwd")}, f)

papermill.execute_notebook = execute_notebook
BUDGETS["quick"]["simulate"] = tiny
sys.exit(main(["run", *sys.argv[3:]]))
"""


def run_job(root: Path, *argv: str) -> tuple[dict, str]:
    """Run the main job with LENSING_ROOT=root; the recorded papermill call and the output."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "LENSING_ROOT": str(root), "PYTHONPATH": path}
    record = root / "papermill.json"
    command = [sys.executable, "-c", JOB, str(record), json.dumps(TINY), *argv]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(record.read_text()), done.stdout


# --- the data choice -------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project root: data/dataset and data/simulated point into it."""
    monkeypatch.setattr(constants, "REAL_DATA_DIR", tmp_path / "data" / "dataset")
    monkeypatch.setattr(constants, "SIMULATED_DATA_DIR", tmp_path / "data" / "simulated")
    return tmp_path


def test_the_real_set_counts_once_train_and_val_are_there(project):
    real = project / "data" / "dataset"
    assert not choice.real_data_present()
    assert choice.default_data_dir() == project / "data" / "simulated"
    for split, present in (("train", False), ("test", False), ("val", True)):
        (real / split).mkdir(parents=True)
        assert choice.real_data_present() is present, split
    assert choice.default_data_dir() == real
    (real / "val").rmdir()
    (real / "val").write_text("a file is not a split folder")
    assert not choice.real_data_present()


def test_choose_data_uses_the_real_set_and_simulates_nothing(project, monkeypatch, capsys):
    import lensing.simulate

    def refuse(*args, **kwargs):
        raise AssertionError("simulated although the real set is present")

    monkeypatch.setattr(lensing.simulate, "simulate_dataset", refuse)
    for split in ("train", "val"):
        (project / "data" / "dataset" / split).mkdir(parents=True)
    assert choice.choose_data(TINY, seed=3) == project / "data" / "dataset"
    assert "real data set" in capsys.readouterr().out
    assert not (project / "data" / "simulated").exists()


def test_choose_data_simulates_into_data_simulated_without_the_real_set(
    project, monkeypatch, capsys
):
    import lensing.simulate

    calls = []
    monkeypatch.setattr(lensing.simulate, "simulate_dataset", lambda *a, **k: calls.append((a, k)))
    (project / "data" / "dataset" / "train").mkdir(parents=True)  # half a download: not real
    assert choice.choose_data(TINY, seed=3) == project / "data" / "simulated"
    assert calls == [((project / "data" / "simulated", TINY), {"seed": 3})]
    assert "SIMULATED" in capsys.readouterr().out


# --- the main job, end to end but for the notebook ---------------------------------------------


@pytest.mark.slow
def test_main_job_without_the_real_set_simulates_into_data_simulated(tmp_path):
    papermill, out = run_job(tmp_path, "--seed", "3")
    simulated = tmp_path / "data" / "simulated"
    for split, n in TINY.items():
        for name in constants.CLASSES:
            assert len(list((simulated / split / name).glob("*.npy"))) == n, (split, name)
    assert json.loads((simulated / constants.MANIFEST).read_text())["seed"] == 3
    assert not (tmp_path / "data" / "dataset").exists()  # the real download's folder, untouched
    parameters = papermill["parameters"]
    assert parameters["data_dir"] == str(simulated)
    assert parameters["models_dir"] == str(tmp_path / "models")
    assert parameters["reports_dir"] == str(tmp_path / "reports")
    assert parameters["perform_grid_search"] is True and parameters["seed"] == 3
    quick = BUDGETS["quick"]["parameters"]
    for key in ("grid", "epochs_per_combination", "additional_epochs"):
        assert parameters[key] == quick[key], key
    # The repository's notebook, executed into reports/ under LENSING_ROOT.
    assert Path(papermill["input"]).is_file()
    assert Path(papermill["input"]).name == "classification_notebook.ipynb"
    assert papermill["output"] == str(tmp_path / "reports" / "classification_notebook.ipynb")
    # The plan, with the counts simulated.
    plan = next(line for line in out.splitlines() if line.startswith("Plan (quick budget)"))
    assert "SIMULATED" in plan.upper() and "2 / 1 / 1 images per class" in plan
    # The last word is the verdict on the test metrics; papermill is stubbed and wrote none.
    assert out.splitlines()[-1].startswith("No verdict: ")


@pytest.mark.slow
def test_main_job_with_the_real_set_uses_it_and_simulates_nothing(tmp_path, write_set):
    real = write_set(tmp_path / "data" / "dataset", {"train": 2, "val": 1, "test": 1})
    papermill, out = run_job(tmp_path)
    assert papermill["parameters"]["data_dir"] == str(real)
    assert papermill["parameters"]["seed"] == 0
    assert not (tmp_path / "data" / "simulated").exists()
    plan = next(line for line in out.splitlines() if line.startswith("Plan (quick budget)"))
    assert "REAL" in plan.upper() and "SIMULATED" not in out.upper()


# --- the plan --------------------------------------------------------------------------------


UNITS = {"s": 1, "min": 60, "h": 3600}


def shown_seconds(line: str) -> float:
    """The duration a plan line shows ("about 4.4 min"), in seconds."""
    match = re.search(r"about ([0-9.]+) (s|min|h)\b", line)
    assert match, line
    return float(match[1]) * UNITS[match[2]]


def assert_shows(line: str, seconds: float) -> None:
    """``line`` shows ``seconds`` to the precision it is written with (its last digit)."""
    number = re.search(r"about ([0-9.]+) (s|min|h)\b", line)[1]
    digit = 10.0 ** -(len(number.split(".")[1]) if "." in number else 0)
    unit = UNITS[re.search(r"about [0-9.]+ (s|min|h)\b", line)[1]]
    assert abs(shown_seconds(line) - seconds) <= 0.5 * digit * unit + 1e-9, (line, seconds)


def test_describe_plan_gives_the_counts_and_the_expected_times():
    # Worked out here from the measured rates (training images/s; inference 3 times faster, the
    # test set 8 passes with D4): quick = 1 combination x 6 epochs on 400 / 100 / 150 per class.
    plan = describe_plan("quick", "cpu-fp32", {"train": 400, "val": 100, "test": 150}, "simulated")
    lines = plan.splitlines()
    assert lines[0] == (
        "Plan (quick budget): simulated data, 400 / 100 / 150 images per class "
        "(train / val / test); 1 combination(s) x 6 epochs: 7,200 training images seen; "
        "test with D4 averaging."
    )
    quick = 6 * (1200 + 300 / 3) + 8 * 450 / 3  # seconds x images/s
    assert "native bf16" in lines[1] and "fp32" in lines[2] and "H200" in lines[3]
    assert_shows(lines[1], quick / 56.8)  # 2.6 min
    assert_shows(lines[2], quick / 34.2)  # 4.4 min
    assert_shows(lines[3], quick / 23_150)  # 0.4 s
    assert lines[2].endswith("<- this machine's kind")
    assert sum("<- this machine's kind" in line for line in lines) == 1

    # full: the default grid's 4 combinations x 10 epochs + 5 more on 1,000 / 250 / 250.
    plan = describe_plan("full", "gpu", {"train": 1000, "val": 250, "test": 250}, "real")
    lines = plan.splitlines()
    assert "1,000 / 250 / 250 images per class" in lines[0]
    assert "4 combination(s) x 10 epochs + 5 more: 135,000 training images seen" in lines[0]
    full = 45 * (3000 + 750 / 3) + 8 * 750 / 3
    assert_shows(lines[2], full / 34.2)  # 72.2 min
    assert_shows(lines[3], full / 23_150)  # 6.3 s
    assert lines[3].endswith("<- this machine's kind")
