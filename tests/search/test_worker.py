"""The worker on Optuna's public API, fast: fit is replaced by a stand-in that trains nothing.

What is checked: the loop runs each queued trial through ``Study.optimize`` and gives every
combination the search's TrainConfig template with its own learning rates and folder; a stray
trial (``Study.ask`` made it fresh: the queue had emptied) steps aside untrained and is left out
of the table; a RUNNING trial whose worker process on this machine is gone is failed at once
with ``Study.tell`` and retried by the storage's callback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

import lensing.search.worker as worker_module
from lensing.search.grid import grid_combos
from lensing.search.publish import publish_best
from lensing.search.queueing import open_study
from lensing.search.recovery import HOST, _fail, fail_dead_trials
from lensing.search.storage import open_storage
from lensing.search.study import STRAY, stepped_aside, study_table, trial_combo
from lensing.search.worker import Objective, Worker
from lensing.training.config import TrainConfig

GRID = {"early": [1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
AUC = {1e-4: 0.7, 1e-3: 0.9}  # the stand-in's val AUC by lr_late


pytestmark = pytest.mark.usefixtures("quiet_optuna")


@pytest.fixture
def search(tmp_path: Path):
    """(storage, study, objective, lines logged) of a queued 2-combination search."""
    rdb = open_storage(f"sqlite:///{tmp_path / 'grid_search.db'}", 1, 3)
    study = open_study(rdb, "lr_grid", GRID, {"epochs": 1, "prune": "none"}, "none", 3)
    template = TrainConfig(data_dir=str(tmp_path / "data"), out_dir=str(tmp_path), epochs=1)
    template = dataclasses.replace(template, resume=True, batch_size=8, pretrained="none")
    lines: list[str] = []
    objective = Objective(study, GRID, template, "none", lines.append, progress=False)
    objective.datasets = {}  # never read: fit is a stand-in
    return rdb, study, objective, lines


def stand_in_fit(configs: list[TrainConfig]):
    """A fit that records its config, reports one epoch and writes a best_model.pth."""

    def fit(config, datasets, on_epoch_end=None, progress=True):
        configs.append(config)
        auc = AUC[config.lr_late]
        if on_epoch_end is not None:
            on_epoch_end(1, {"epoch": 1, "val_auc": auc})
        Path(config.out_dir).mkdir(parents=True, exist_ok=True)
        params = {g: getattr(config, f"lr_{g}") for g in GRID}
        best = {"model": {}, "params": params, "val_auc": auc, "epoch": 1}
        best |= {"history": [{"epoch": 1, "val_auc": auc}], "classes": ["no", "sphere", "vort"]}
        torch.save(best | {"pretrained": False}, Path(config.out_dir) / "best_model.pth")
        return {"start_epoch": 0, "history": [{"epoch": 1}], "best_val_auc": auc}

    return fit


def test_each_combination_trains_the_template_with_its_own_rates(
    search, monkeypatch, tmp_path: Path
) -> None:
    rdb, study, objective, lines = search
    configs: list[TrainConfig] = []
    monkeypatch.setattr(worker_module, "fit", stand_in_fit(configs))
    Worker(objective, 1, 3, rdb.get_heartbeat_stale_trial_callback()).run()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(configs) == 2
    for config, combo in zip(configs, grid_combos(GRID), strict=True):
        assert config.learning_rates() == combo.rates
        assert config.out_dir == str(tmp_path / "trials" / "lr_grid" / combo.key)
        unchanged = dataclasses.replace(objective.config, **combo.params, out_dir=config.out_dir)
        assert config == unchanged  # data_dir, epochs, resume, batch size... from the template
    assert any("(1/2)" in line for line in lines) and any("(2/2)" in line for line in lines)
    assert publish_best(study, tmp_path)["val_auc"] == 0.9


def test_a_stray_trial_steps_aside_and_is_left_out(search, monkeypatch, tmp_path: Path) -> None:
    """Another worker took the last queued trial between this one's look and its ask:
    ``Study.ask`` makes a fresh trial, which steps aside untrained."""
    rdb, study, objective, lines = search
    monkeypatch.setattr(worker_module, "fit", stand_in_fit(configs := []))
    for _ in range(2):  # empty the queue
        study.optimize(objective, n_trials=1, catch=())
    study.optimize(objective, n_trials=1, catch=())  # the queue is empty: a fresh trial
    stray = study.trials[-1]
    assert len(configs) == 2, "the stray trial trained"
    assert stray.state == TrialState.PRUNED and stray.params == {}
    assert stray.user_attrs[STRAY]["trial"] == stray.number
    assert stray.user_attrs[STRAY]["host"] == HOST
    assert trial_combo(stray) is None and stepped_aside(stray)
    assert f"trial {stray.number}: the queue was empty when it started; stepped aside" in lines
    table = study_table(study)
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    assert stray.number not in set(table["trial"])
    assert publish_best(study, tmp_path)["trial"] != stray.number


def test_a_dead_local_worker_is_failed_at_once_and_retried(search) -> None:
    rdb, study, _, _ = search
    with pytest.warns(UserWarning, match="Heartbeat of storage"):
        trials = [study.ask() for _ in range(2)]  # a worker took both queued trials...
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    trials[0].set_user_attr("worker", {"host": HOST, "pid": gone.pid, "trial": 0})
    # ...and the second is held by a live worker of this machine (this test's process).
    trials[1].set_user_attr("worker", {"host": HOST, "pid": os.getppid(), "trial": 1})
    retry = rdb.get_heartbeat_stale_trial_callback()
    assert fail_dead_trials(study, retry) == [0]
    assert [t.state for t in study.trials] == [
        TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING,
    ]  # fmt: skip
    copy = study.trials[2]
    assert trial_combo(copy) == trial_combo(study.trials[0])
    assert copy.user_attrs["key"] == trial_combo(copy).key
    # A trial another worker failed (or finished) first is no error, and is not retried twice.
    assert fail_dead_trials(study, retry) == []
    assert _fail(study, 0) is None
    assert len(study.trials) == 3


def test_a_waiting_worker_names_the_host_once_the_trial_records_it(search) -> None:
    """The other worker records its host a moment after its trial starts; the worker that
    waits names that host (not "None"), once, as soon as it is recorded."""
    rdb, study, objective, lines = search
    with pytest.warns(UserWarning, match="Heartbeat of storage"):
        trial = study.ask()  # another worker's trial, its host not recorded yet
    waiter = Worker(objective, 0.01, 3, rdb.get_heartbeat_stale_trial_callback())
    running, waited_on = {trial_combo(study.trials[0])}, set()
    waiter._wait_for_others(running, waited_on)
    assert lines == [] and waited_on == set()
    trial.set_user_attr("worker", {"host": "other-host", "pid": 1, "trial": trial.number})
    for _ in range(2):
        waiter._wait_for_others(running, waited_on)
    assert len(lines) == 1 and lines[0].startswith(
        f"waiting for trial {trial.number} on other-host"
    )
    assert waited_on == {trial.number}
