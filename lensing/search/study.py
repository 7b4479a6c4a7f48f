"""Reading a study: which combination each trial trains, each combination's state, the table.

A combination may have several trials: a retry after a dead worker (a new trial with the same
learning rates, resuming the same folder), or a duplicate that found its combination taken and
stepped aside (marked ``duplicate_of``). The table speaks for each combination once. A *stray*
trial, one ``Study.ask`` made fresh because another worker had just taken the last queued
combination, has no combination at all (marked ``stray``): it belongs to no row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from lensing.core.constants import LAYER_GROUPS, MODELS_DIR
from lensing.search.grid import Combo, grid_combos
from lensing.search.optuna_attrs import queued_params
from lensing.search.storage import SEARCH_DB, default_storage, load_study

DEFAULT_STUDY = "lr_grid"  # Optuna study name; a new name starts a new search
STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")  # best first, for the table
FINISHED = ("COMPLETE", "PRUNED")
TABLE_COLUMNS = [f"lr_{g}" for g in LAYER_GROUPS]
TABLE_COLUMNS += ["val_auc", "epochs", "state", "trial", "epochs_saved", "key"]
STRAY = "stray"  # user attribute of a trial that found no queued combination and stepped aside


def trial_combo(trial: FrozenTrial) -> Combo | None:
    """The combination a trial trains: its params once it runs; before, the one it was queued
    with (the user attribute ``key``, else the params Optuna queued it with). None for a trial
    with none of them (a stray)."""
    key = trial.user_attrs.get("key")
    for combo in (_combo(trial.params), _key_combo(key), _combo(queued_params(trial))):
        if combo is not None:
            return combo
    return None


def _combo(params: dict[str, Any]) -> Combo | None:
    try:
        return Combo.from_params({k: v for k, v in params.items() if k.startswith("lr_")})
    except KeyError:
        return None


def _key_combo(key: Any) -> Combo | None:
    try:
        return Combo.from_key(key) if isinstance(key, str) else None
    except ValueError:
        return None


def frozen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The trial of ``study`` numbered ``number``, as stored now."""
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    raise KeyError(f"study {study.study_name!r} has no trial {number}")


def own_attr(trial: FrozenTrial, name: str) -> dict | None:
    """A user attribute stamped with the trial's own number; None when it was inherited.

    A retried trial starts with a copy of the dead trial's user attributes, so whatever a worker
    writes about *this* trial (who runs it, whether it stepped aside) carries the trial number.
    """
    value = trial.user_attrs.get(name)
    if isinstance(value, dict) and value.get("trial") == trial.number:
        return value
    return None


def is_duplicate(trial: FrozenTrial) -> bool:
    """Whether the trial stepped aside for another trial of its combination."""
    return own_attr(trial, "duplicate_of") is not None


def stepped_aside(trial: FrozenTrial) -> bool:
    """Whether the trial stepped aside untrained: a duplicate, or a stray without a
    combination."""
    return is_duplicate(trial) or own_attr(trial, STRAY) is not None


def group_trials(trials: list[FrozenTrial]) -> dict[Combo, list[FrozenTrial]]:
    """The trials of each combination, duplicates (and strays, which have none) left out."""
    by_combo: dict[Combo, list[FrozenTrial]] = {}
    for trial in trials:
        combo = trial_combo(trial)
        if combo is not None and not is_duplicate(trial):
            by_combo.setdefault(combo, []).append(trial)
    return by_combo


def combo_state(trials: list[FrozenTrial]) -> str:
    """COMPLETE/PRUNED when any trial finished it, else RUNNING, WAITING, FAIL, or NEW."""
    states = {t.state for t in trials}
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        if state in states:
            return state.name
    if TrialState.WAITING in states:
        return "WAITING"
    return "FAIL" if states else "NEW"


def combos_by_state(study: optuna.Study, combos: list[Combo]) -> dict[str, list[Combo]]:
    """The combinations of ``combos`` under each state of :func:`combo_state`."""
    by_combo = group_trials(study.get_trials(deepcopy=False))
    out: dict[str, list[Combo]] = {s: [] for s in (*FINISHED, "RUNNING", "WAITING", "FAIL")}
    out["NEW"] = []
    for combo in combos:
        out[combo_state(by_combo.get(combo, []))].append(combo)
    return out


def representative(trials: list[FrozenTrial]) -> FrozenTrial:
    """The trial that speaks for a combination in the results table."""
    rank = {s: i for i, s in enumerate(STATES)}
    return min(trials, key=lambda t: (rank[t.state.name], -(t.value or 0.0), -t.number))


def epochs_done(trial: FrozenTrial) -> int:
    """Epochs the combination had trained when the trial last reported."""
    if "epochs_done" in trial.user_attrs:
        return int(trial.user_attrs["epochs_done"])
    return len(trial.intermediate_values)


def trial_auc(trial: FrozenTrial) -> float:
    """Best validation AUC of a trial: its value, else its best report, else NaN."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    return max(values) if values else math.nan


def results_table(
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = DEFAULT_STUDY,
    out_dir: str | Path = MODELS_DIR,
) -> pd.DataFrame:
    """One row per learning-rate combination of a search, best validation AUC first.

    Parameters
    ----------
    storage : SQLAlchemy URL or storage; default ``sqlite:///<out_dir>/grid_search.db``.
    study_name : the search's Optuna study name.
    out_dir : the search's models folder (used for the default storage).

    Returns
    -------
    pandas.DataFrame with columns lr_early, lr_middle, lr_late, lr_fc (float), val_auc (best
    validation macro AUC so far, NaN before the first epoch), epochs (epochs trained), state
    (COMPLETE, PRUNED, RUNNING, WAITING: not started or queued, FAIL), trial (Optuna trial
    number, -1 when not started), epochs_saved (epochs a pruned combination did not train),
    key (the trial folder's name). ``table.attrs`` holds study, epochs (per combination),
    grid, and epochs_saved (total).
    """
    if storage is None:
        db = Path(out_dir) / SEARCH_DB
        if not db.is_file():
            raise FileNotFoundError(
                f"no search database {db}; run `python -m lensing search --out {out_dir}` first"
            )
        storage = default_storage(out_dir)
    return study_table(load_study(storage, study_name))


def study_table(study: optuna.Study) -> pd.DataFrame:
    """:func:`results_table` of an open study."""
    grid = study.user_attrs.get("grid")
    epochs = study.user_attrs.get("settings", {}).get("epochs")
    by_combo = group_trials(study.get_trials(deepcopy=False))
    combos = list(by_combo)
    if grid is not None:
        in_grid = grid_combos(grid)
        combos = in_grid + [c for c in combos if c not in set(in_grid)]
    rows = [_row(combo, by_combo.get(combo, []), epochs) for combo in combos]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.sort_values("val_auc", ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    table.attrs = {
        "study": study.study_name,
        "epochs": epochs,
        "grid": grid,
        "epochs_saved": int(table["epochs_saved"].sum()),
    }
    return table


def _row(combo: Combo, trials: list[FrozenTrial], epochs: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict(combo.params)
    state = combo_state(trials)
    if state in ("NEW", "WAITING") and not any(t.intermediate_values for t in trials):
        row |= {"val_auc": math.nan, "epochs": 0, "state": "WAITING", "trial": -1}
        return row | {"epochs_saved": 0, "key": combo.key}
    trial = representative(trials)
    done = epochs_done(trial)
    saved = max(0, epochs - done) if state == "PRUNED" and epochs else 0
    row |= {"val_auc": trial_auc(trial), "epochs": done, "state": state, "trial": trial.number}
    return row | {"epochs_saved": saved, "key": combo.key}


def format_table(table: pd.DataFrame) -> str:
    """A results table as GitHub markdown (without needing ``tabulate``)."""
    headers = [str(c) for c in table.columns]
    rows = [[_cell(v) for v in record] for record in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4f}" if 0.01 <= abs(value) < 1000 else f"{value:g}"
    return str(value)
