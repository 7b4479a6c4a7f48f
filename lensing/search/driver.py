""":func:`run_search`: run, resume or join a grid search, and return its results table."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning

from lensing.core.constants import LAYER_GROUPS, MODELS_DIR, PRUNE_MODES
from lensing.core.progress import say
from lensing.model.checkpoint import BEST_MODEL
from lensing.search.grid import grid_size, resolve_grid
from lensing.search.publish import publish_best
from lensing.search.queueing import open_study
from lensing.search.storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    default_storage,
    open_storage,
    redact,
)
from lensing.search.study import DEFAULT_STUDY, FINISHED, combos_by_state, study_table
from lensing.search.worker import Objective, Worker
from lensing.training.fit import TrainConfig

DEFAULT_EPOCHS = TrainConfig.epochs  # epochs per combination: a training run's default
STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # it names a folder too
# TrainConfig fields that say where or on what a worker runs, not what it trains: workers that
# share a study may differ in them. Every other field must match the study's first run.
ENVIRONMENT_KEYS = frozenset(
    {"data_dir", "out_dir", "device", "num_workers", "in_memory", "resume", "eval_batch_size"}
    | {"channels_last"}
    | {f"lr_{group}" for group in LAYER_GROUPS}
)
CHOSEN_HERE = frozenset({"data_dir", "out_dir", "resume", "epochs"})  # and the learning rates


def run_search(
    data_dir: str | Path,
    out_dir: str | Path = MODELS_DIR,
    epochs: int = DEFAULT_EPOCHS,
    grid: Mapping[str, list[float]] | str | Path | None = None,
    storage: str | None = None,
    study_name: str = DEFAULT_STUDY,
    base_config: dict | None = None,
    prune: str = "none",
    n_trials: int | None = None,
    progress: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    datasets: dict | None = None,
    resume_hint: str | None = None,
    quiet: bool = False,
) -> pd.DataFrame:
    """Run (or resume, or join) the grid search and return its results table.

    Parameters
    ----------
    data_dir : data folder with train/ and val/, one subfolder per class of .npy images.
    out_dir : models folder: trials/, best_model.pth, best_params.json, grid_search.db.
    epochs : epochs per combination.
    grid : mapping layer group -> learning rates, or a path to a grid JSON file; default
        DEFAULT_GRID.
    storage : SQLAlchemy URL of the study; default ``sqlite:///<out_dir>/grid_search.db``.
        ``postgresql://user:password@host/db`` shares the search between machines.
    study_name : the study; a new name starts a new search in the same storage.
    base_config : further TrainConfig fields for every combination (batch_size, pretrained,
        precision, seed, ...); learning rates come from the grid.
    prune : "none" (train every combination fully), "median" or "halving" (stop combinations
        whose validation AUC lags, via Optuna's MedianPruner / SuccessiveHalvingPruner).
    n_trials : train at most this many combinations in this call, then return.
    progress : progress bars. The per-trial and per-epoch lines are printed always.
    heartbeat_interval, grace_period : seconds (see :func:`open_storage`).
    datasets : already loaded ``lensing.data.dataset.load_splits(data_dir)``; loaded
        once otherwise.
    resume_hint : how to say "run this again" in the Ctrl-C message (the CLI passes its command).
    quiet : no search lines and no bars (fit's per-epoch lines still appear).

    Returns the :func:`results_table`. Ctrl-C (KeyboardInterrupt) stops after saying how to
    resume, with the running combination's checkpoint intact, and is raised again.
    """
    grid = resolve_grid(grid)
    base_config = dict(base_config or {})
    _check_arguments(study_name, epochs, n_trials, prune, base_config)
    out_dir = Path(out_dir)
    log = _logger(quiet)
    hint = f" (this run: {resume_hint})" if resume_hint else ""
    url = storage or default_storage(out_dir)
    with _quiet_optuna():
        rdb = open_storage(url, heartbeat_interval, grace_period)
        base_config = _with_study_settings(rdb, study_name, base_config, log)
        template = _template(data_dir, out_dir, epochs, base_config)
        study = open_study(rdb, study_name, grid, _settings(template, prune), prune,
                           grace_period, hint)  # fmt: skip
        objective = Objective(
            study, grid, template, prune, log, progress=progress and not quiet, datasets=datasets
        )
        worker = Worker(
            objective, heartbeat_interval, grace_period, rdb.get_heartbeat_stale_trial_callback()
        )
        done = _finished(study, worker)
        log(
            f"study {study_name!r} in {redact(url)}: {done}/{grid_size(grid)} combinations "
            f"finished, {epochs} epoch(s) each"
        )
        if done == grid_size(grid):
            log("the search is complete: nothing to train")
        try:
            worker.run(n_trials)
        except KeyboardInterrupt:
            _say_interrupted(worker, resume_hint)
            raise
        finally:
            best = publish_best(study, out_dir)
        table = study_table(study)
    _say_result(log, table, done, grid_size(grid), prune, best, out_dir)
    return table


def _check_arguments(
    study_name: str, epochs: int, n_trials: int | None, prune: str, base_config: dict
) -> None:
    if not STUDY_NAME_PATTERN.match(study_name):
        raise ValueError(
            f"study name {study_name!r}; expected letters, digits, '.', '_' or '-' "
            "(it also names the folder of the study's trials)"
        )
    if type(epochs) is not int or epochs < 1:
        raise ValueError(f"epochs {epochs!r}; expected a whole number >= 1")
    if n_trials is not None and (type(n_trials) is not int or n_trials < 1):
        raise ValueError(f"n_trials {n_trials!r}; expected None or a whole number >= 1")
    if prune not in PRUNE_MODES:
        raise ValueError(f"prune {prune!r}; expected one of {', '.join(PRUNE_MODES)}")
    clashes = sorted(set(base_config) & (CHOSEN_HERE | {f"lr_{g}" for g in LAYER_GROUPS}))
    if clashes:
        raise ValueError(
            f"base_config sets {', '.join(clashes)}; the search chooses these itself (learning "
            "rates from the grid, epochs, data_dir, out_dir and resume from run_search's "
            "arguments)"
        )


def _logger(quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda message: None
    return lambda message: say(f"[search] {message}")


def _finished(study: optuna.Study, worker: Worker) -> int:
    pending = combos_by_state(study, worker.combos)
    return sum(len(pending[state]) for state in FINISHED)


def _with_study_settings(
    rdb: Any, study_name: str, base_config: dict, log: Callable[[str], None]
) -> dict:
    """``base_config`` completed with an existing study's own settings for every training
    field the caller left unset, so a plain re-run resumes a study even after the package's
    defaults changed (an explicit setting that differs is still refused by check_study)."""
    try:
        stored = optuna.load_study(study_name=study_name, storage=rdb).user_attrs.get("settings")
    except KeyError:  # no such study yet
        return base_config
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(ENVIRONMENT_KEYS)
    adopted = {
        k: v
        for k, v in (stored or {}).items()
        if k in fields - {"epochs"} and k not in base_config
    }
    if adopted:
        log(f"study {study_name!r} resumes with its own settings for {sorted(adopted)}")
    return adopted | base_config


def _template(data_dir: str | Path, out_dir: Path, epochs: int, base_config: dict) -> TrainConfig:
    """The TrainConfig every combination trains with, checked once: ``base_config`` with the
    data folder, the epochs and ``resume`` on; ``out_dir`` is the search's models folder (a
    combination replaces it with its trial folder, and the learning rates with its own)."""
    chosen = {"data_dir": str(data_dir), "out_dir": str(out_dir), "epochs": epochs}
    return TrainConfig.from_dict(base_config | chosen | {"resume": True})


def _settings(template: TrainConfig, prune: str) -> dict[str, Any]:
    """What a study's trials were trained with, apart from learning rates and environment: the
    study's stored "settings"."""
    fields = {k: v for k, v in dataclasses.asdict(template).items() if k not in ENVIRONMENT_KEYS}
    return json.loads(json.dumps(fields | {"prune": prune}, default=str))


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        # Heartbeats and retries have been "experimental" in Optuna since 2.x.
        warnings.simplefilter("ignore", ExperimentalWarning)
        # Optuna would log each trial, and each failed one with its traceback (a Ctrl-C twice
        # over, an error before it propagates); the search says what happens itself.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)


def _say_interrupted(worker: Worker, resume_hint: str | None) -> None:
    state = worker.state
    where = ""
    if state.current is not None:
        where = (
            f" during trial {state.current} ({state.current_key}) after epoch "
            f"{state.current_epochs}; its checkpoint is intact"
        )
    again = resume_hint or "run_search(...) again with the same arguments"
    print(f"\n[search] interrupted{where}. To resume, run: {again}", file=sys.stderr, flush=True)


def _say_result(
    log: Callable[[str], None],
    table: pd.DataFrame,
    done_before: int,
    n_combos: int,
    prune: str,
    best: dict | None,
    out_dir: Path,
) -> None:
    finished = int(table["state"].isin(FINISHED).sum())
    if finished == n_combos and done_before < n_combos:
        log(f"the search is complete: {n_combos} combinations")
    if prune != "none":
        log(f"pruning saved {table.attrs['epochs_saved']} epoch(s)")
    if best is not None:
        log(
            f"best: {best['trial_key']} val AUC {best['val_auc']:.4f} (trial {best['trial']}) "
            f"-> {out_dir / BEST_MODEL}"
        )
