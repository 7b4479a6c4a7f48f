"""A storage error in a running trial's heartbeat is logged and retried, not fatal."""

from __future__ import annotations

import time

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from lensing.search.storage import open_storage


def test_heartbeat_survives_storage_errors(tmp_path, monkeypatch, capsys):
    """Optuna's heartbeat thread (``Study.optimize``) calls the search storage's
    ``record_heartbeat``: two failed beats are reported as missed, the thread goes on and
    records a later one, and the trial completes."""
    storage = open_storage(f"sqlite:///{tmp_path / 'search.db'}", 1, 3)
    study = optuna.create_study(storage=storage, study_name="s")
    real, calls = RDBStorage.record_heartbeat, []

    def flaky(self, tid):
        calls.append(tid)
        if len(calls) <= 2:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server gone"))
        real(self, tid)

    def objective(trial: optuna.Trial) -> float:
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        return 1.0

    monkeypatch.setattr(RDBStorage, "record_heartbeat", flaky)
    study.optimize(objective, n_trials=1, catch=())
    assert len(calls) >= 4, f"the heartbeat thread stopped after {len(calls)} call(s)"
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    trial_id = calls[0]
    assert storage.get_trial(trial_id).number == trial.number
    err = capsys.readouterr().err
    missed = f"heartbeat of trial id {trial_id} missed (OperationalError); retrying"
    assert err.count(missed) == 2, err
    with storage.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?", (trial_id,)
        ).fetchall()
    assert len(rows) == 1, "no heartbeat recorded after the missed ones"
