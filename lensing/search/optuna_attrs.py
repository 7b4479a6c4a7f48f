"""The trial attributes Optuna writes for itself, read in this one place.

Optuna keeps some facts about a trial as *system attributes*. ``FrozenTrial.system_attrs`` is
public, but which names Optuna writes there, and what they hold, is not part of its documented
API: no public method returns them. The search reads three of them, only where nothing public
(or its own user attribute ``key``) can serve:

- ``fixed_params``: the learning rates ``Study.enqueue_trial`` queued a trial with. Until the
  trial runs, ``FrozenTrial.params`` is empty. The search's own trials carry the user attribute
  ``key`` as well (set by ``recovery.requeue``, copied to retries), which
  :func:`lensing.search.study.trial_combo` prefers; this is the fallback for a trial queued
  without it.
- ``grid_id`` and ``search_space``: what Optuna's ``GridSampler`` stamps on each of its trials.
  The search sampled the grid with GridSampler once (``tests/fixtures/search_v1`` holds such a
  study); they tell such a study apart, and its grid, so it still resumes.

``tests/search/test_optuna_attrs.py`` makes these attributes with Optuna itself and fails when
Optuna moves or renames one of them.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

FIXED_PARAMS = "fixed_params"  # Study.enqueue_trial: {param name: value}
GRID_ID = "grid_id"  # GridSampler: the index of the trial's grid point
GRID_SEARCH_SPACE = "search_space"  # GridSampler: {param name: [values]} of the whole grid


def queued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial was queued with by ``Study.enqueue_trial``; {} for none."""
    params = trial.system_attrs.get(FIXED_PARAMS)
    return dict(params) if isinstance(params, dict) else {}


def is_grid_sampler_trial(trial: FrozenTrial) -> bool:
    """Whether Optuna's GridSampler made the trial (a study of the GridSampler version)."""
    return GRID_ID in trial.system_attrs


def grid_sampler_space(trial: FrozenTrial) -> dict[str, list[Any]] | None:
    """The GridSampler grid a trial was sampled from, ``{"lr_<group>": [...]}``; None for a
    trial GridSampler did not make."""
    space = trial.system_attrs.get(GRID_SEARCH_SPACE)
    return space if isinstance(space, dict) else None
