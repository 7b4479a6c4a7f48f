"""Progress bars in every way a notebook runs: live widgets for a person, nothing stale saved.

A tiny notebook is executed by nbclient (what papermill and ``jupyter nbconvert --execute``
use) once as a headless run and once with the variable Jupyter Server gives the kernels of
JupyterLab; the saved outputs are then read as a user opening the file would see them.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from lensing.core.progress import NO_BARS_ENV, bars_wanted, headless_kernel

CELL = """
from lensing.core.progress import bar, say
for _ in bar(range(3), desc="loading"):
    pass
say("epoch 1/1 done")
"""


def run_cell(tmp_path) -> list[dict]:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={}).execute(
        cwd=str(tmp_path)
    )
    return notebook.cells[0].outputs


def test_outside_a_kernel_bars_follow_the_caller_and_the_variable(monkeypatch):
    monkeypatch.delenv(NO_BARS_ENV, raising=False)
    assert not headless_kernel()
    assert bars_wanted() and not bars_wanted(False)
    monkeypatch.setenv(NO_BARS_ENV, "1")
    assert not bars_wanted()


@pytest.mark.slow
def test_a_headless_run_saves_no_stale_bar(tmp_path, monkeypatch):
    for name in (NO_BARS_ENV, "JPY_SESSION_NAME", "VSCODE_PID"):
        monkeypatch.delenv(name, raising=False)
    saved = json.dumps(run_cell(tmp_path))
    assert "epoch 1/1 done" in saved  # the log line is kept
    assert "%|" not in saved and "widget-view" not in saved


@pytest.mark.slow
def test_a_kernel_of_jupyterlab_draws_a_live_bar(tmp_path, monkeypatch):
    monkeypatch.delenv(NO_BARS_ENV, raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "lab.ipynb"))
    saved = json.dumps(run_cell(tmp_path))
    assert "epoch 1/1 done" in saved
    assert "widget-view" in saved  # tqdm's widget, which JupyterLab renders live
