"""The trial attributes Optuna writes for itself are where lensing.search.optuna_attrs reads them.

They have no public API (see that module): these tests make each one with Optuna itself, in an
in-memory study, and fail when Optuna moves or renames it. The last test keeps every other
module of the search on Optuna's public API.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

import lensing.search
from lensing.search.grid import Combo, search_space
from lensing.search.optuna_attrs import grid_sampler_space, is_grid_sampler_trial, queued_params
from lensing.search.storage import retry_callback
from lensing.search.study import trial_combo

GRID = {"early": [1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
COMBO = Combo(1e-4, 1e-4, 1e-3, 1e-3)


pytestmark = pytest.mark.usefixtures("quiet_optuna")


def test_enqueue_trial_keeps_its_params_where_we_read_them() -> None:
    study = optuna.create_study()
    study.enqueue_trial(COMBO.params)
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.params == {}  # nothing public holds them before the trial runs
    assert queued_params(waiting) == COMBO.params
    assert trial_combo(waiting) == COMBO  # no "key" user attribute: the fallback serves
    # The trial Study.ask takes from the queue suggests exactly those.
    trial = study.ask()
    assert trial.number == waiting.number
    assert trial.suggest_categorical("lr_late", GRID["late"]) == COMBO.late


def test_a_retry_keeps_the_queued_combination_and_names_the_dead_trial() -> None:
    """A trial killed before it suggested anything: its retry is known by our "key" and by
    Optuna's queued params, and ``retried_trial_number`` (public) names the dead trial."""
    study = optuna.create_study()
    study.enqueue_trial(COMBO.params, user_attrs={"key": COMBO.key})
    dead = study.tell(study.ask(), state=TrialState.FAIL)
    retry_callback(max_retry=None)(study, dead)  # Optuna's RetryHeartbeatStaleTrialCallback
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs["key"] == COMBO.key
    assert queued_params(retry) == COMBO.params
    assert trial_combo(retry) == COMBO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == dead.number


def test_grid_sampler_stamps_its_trials_where_we_read_them() -> None:
    space = search_space(GRID)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space, seed=0))
    study.optimize(
        lambda t: sum(t.suggest_categorical(n, v) for n, v in space.items()), n_trials=1
    )
    (trial,) = study.trials
    assert is_grid_sampler_trial(trial)
    assert grid_sampler_space(trial) == space
    plain = optuna.create_study()
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert not is_grid_sampler_trial(plain.trials[0])
    assert grid_sampler_space(plain.trials[0]) is None


def test_the_search_uses_no_private_optuna_attribute() -> None:
    """Only optuna_attrs reads what Optuna writes for itself; nothing reaches into a Study's
    or a Trial's private attributes (``_storage``, ``_trial_id``, ``_study_id``)."""
    private = re.compile(r"\._(storage|trial_id|study_id|thread_local|cached_frozen_trial)\b")
    found = []
    for path in sorted(Path(lensing.search.__file__).parent.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
            if "system_attrs" in line and path.name != "optuna_attrs.py":
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
