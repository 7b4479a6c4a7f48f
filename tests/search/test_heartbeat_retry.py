"""A storage error in a running trial's heartbeat is logged and retried, not fatal."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage

from lensing.search.storage import open_storage
from lensing.search.worker import _Heartbeat


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_heartbeat_survives_storage_errors(tmp_path, monkeypatch, capsys):
    """Two failed heartbeats are reported as missed; the loop goes on and records a later one."""
    storage = open_storage(f"sqlite:///{tmp_path / 'search.db'}", 1, 3)
    trial_id = optuna.create_study(storage=storage, study_name="s").ask()._trial_id
    real, calls = RDBStorage.record_heartbeat, []

    def flaky(self, tid):
        calls.append(tid)
        if len(calls) <= 2:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server gone"))
        real(self, tid)

    monkeypatch.setattr(RDBStorage, "record_heartbeat", flaky)
    with _Heartbeat(storage, trial_id, 0.02):
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(calls) >= 4, f"the heartbeat loop stopped after {len(calls)} call(s)"
    err = capsys.readouterr().err
    missed = f"heartbeat of trial id {trial_id} missed (OperationalError); retrying"
    assert err.count(missed) == 2, err
    with storage.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?", (trial_id,)
        ).fetchall()
    assert len(rows) == 1, "no heartbeat recorded after the missed ones"
