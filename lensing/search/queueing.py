"""Opening a study and its queue: one queued Optuna trial per combination, taken one at a time.

The worker that creates the study (creation is atomic: one name, one study) stamps it with its
grid and training settings, queues every combination once (``Study.enqueue_trial``, state
WAITING), then marks the study queued. A worker that finds the study already there waits for
that mark before it reads the study; so two workers started together queue the grid once.

Workers take queued trials with ``Study.ask`` (inside ``Study.optimize``), whose WAITING ->
RUNNING transition one worker only can win (a row lock on PostgreSQL, an immediate transaction
on SQLite: see ``storage``). A combination can still be queued twice (two workers re-running a
study with failed combinations at once both queue the retry); the second trial to start then
finds the first running (or finished) and steps aside: :func:`holder`.

Studies begun by the version of this module that sampled the grid with Optuna's GridSampler
(their trials carry ``grid_id``) resume too: their combinations without a trial are queued.
"""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lensing.core.constants import PRUNE_MODES, canonical_augmentation
from lensing.search.grid import Combo, grid_combos, search_space, validate_grid
from lensing.search.optuna_attrs import grid_sampler_space, is_grid_sampler_trial
from lensing.search.recovery import requeue
from lensing.search.study import is_duplicate, trial_combo

QUEUED = "queued"  # study user attribute: the whole grid has been queued once
POLL_S = 0.2  # seconds between looks at a study another worker is setting up


class SearchError(ValueError):
    """A search that cannot go on as asked (a changed grid or settings for an existing study)."""


def make_pruner(prune: str) -> optuna.pruners.BasePruner:
    """The Optuna pruner of a prune mode (config.PRUNE_MODES)."""
    if prune == "none":
        return optuna.pruners.NopPruner()
    if prune == "median":
        # Steps are epochs done (1, 2, ...): a combination can be stopped from its first
        # epoch on, below the median of the others at that epoch, once two have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    raise ValueError(f"prune mode {prune!r}; expected one of {', '.join(PRUNE_MODES)}")


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    grid: dict[str, list[float]],
    settings: dict[str, Any],
    prune: str,
    wait_s: float,
    command_hint: str = "",
) -> optuna.Study:
    """Create the study and queue its grid, or join it once its creator has queued it.

    ``wait_s``: how long to wait for another worker's queueing before doing it here (it may
    have died half-way). Raises SearchError when the study has another grid or settings.
    """
    # Every trial comes from the queue with its learning rates fixed: the sampler never
    # samples, but Optuna wants one.
    options = {"sampler": optuna.samplers.RandomSampler(seed=0), "pruner": make_pruner(prune)}
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize", **options
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, **options)
        _wait_until_queued(study, wait_s)
    check_study(study, grid, settings, command_hint)
    if not study.user_attrs.get(QUEUED):
        requeue(study, grid_combos(grid), include_failed=False)
        study.set_user_attr(QUEUED, True)
    return study


def _wait_until_queued(study: optuna.Study, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not study.user_attrs.get(QUEUED) and time.monotonic() < deadline:
        if any(is_grid_sampler_trial(t) for t in study.get_trials(deepcopy=False)):
            return  # a GridSampler study: nobody is queueing it
        time.sleep(POLL_S)


def holder(study: optuna.Study, trial: FrozenTrial, combo: Combo) -> int | None:
    """The trial that has ``combo`` already, when ``trial`` should step aside for it: one that
    finished it, or one running it that started before (a lower number)."""
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or is_duplicate(other) or trial_combo(other) != combo:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return other.number
        if other.state == TrialState.RUNNING and other.number < trial.number:
            return other.number
    return None


def _comparable(key: str, value: Any) -> Any:
    # "seed" is the old name of the flip-affine augmentation: a study stamped with either
    # name resumes under the other.
    return canonical_augmentation(value) if key == "augment" and isinstance(value, str) else value


def check_study(
    study: optuna.Study, grid: dict, settings: dict[str, Any], command_hint: str = ""
) -> None:
    """Refuse to mix a changed grid or changed training settings into an existing study; stamp
    a study that has neither yet."""
    stored_grid = study.user_attrs.get("grid")
    if stored_grid is None:
        # A study made outside this module: its trials' GridSampler spaces tell its grid.
        spaces = {
            json.dumps(space, sort_keys=True)
            for t in study.get_trials(deepcopy=False)
            if (space := grid_sampler_space(t)) is not None
        }
        if spaces - {json.dumps(search_space(grid), sort_keys=True)}:
            raise SearchError(
                f"study {study.study_name!r} holds trials of a different grid; "
                f"start a new search with another --study name{command_hint}"
            )
        study.set_user_attr("grid", grid)
        study.set_user_attr("settings", settings)
        return
    stored_grid = validate_grid(stored_grid, source=f"study {study.study_name!r}")
    if stored_grid != grid:
        raise SearchError(
            f"study {study.study_name!r} was started with the grid {json.dumps(stored_grid)}, "
            f"but this run asks for {json.dumps(grid)}; start the new grid under a new --study "
            f"name{command_hint}, or re-run with the original grid to resume"
        )
    stored = study.user_attrs.get("settings", {})
    changed = {
        k: (stored[k], v)
        for k, v in settings.items()
        if k in stored and _comparable(k, stored[k]) != _comparable(k, v)
    }
    if changed:
        listed = "; ".join(f"{k}: study {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise SearchError(
            f"study {study.study_name!r} was trained with other settings ({listed}); "
            f"re-run with the study's settings to resume it, or start a new --study name"
            f"{command_hint} (to train the best model longer, use continue_training)"
        )
