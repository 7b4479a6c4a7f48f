"""Resumable grid search over the four layer groups' learning rates (Optuna on RDB storage).

Every combination of the grid is one Optuna trial, trained by :func:`lensing.train.fit` and
scored by its best validation macro AUC. The study lives in an SQLAlchemy database
(``sqlite:///<out>/grid_search.db`` by default), so the search survives anything that stops
the process:

- Finished combinations are never trained again: a re-run skips them, and a finished grid
  trains nothing at all.
- Each combination trains in its own folder, ``<out>/trials/<study>/<key>/``, named by its
  learning rates (``early=1e-05_middle=0.0001_late=0.0001_fc=0.001``), where
  :func:`~lensing.train.fit` keeps a rolling checkpoint every epoch. A retried trial is a new
  Optuna trial with the same learning rates, so it lands in the same folder and resumes from the
  last finished epoch: a kill costs at most the epoch in progress.
- A trial that dies without a word (SIGKILL, power loss, a restarted kernel) stays RUNNING in
  the database. Workers record a heartbeat; one whose heartbeat is older than ``grace_period``
  seconds is failed and re-queued (Optuna's ``RetryHeartbeatStaleTrialCallback``). A dead
  worker on this same machine is recognised at once by its process id, so a restarted single
  worker resumes without waiting for the grace period.
- Ctrl-C fails the running trial with its checkpoint intact; the next run re-queues it.
- Several workers (processes, machines) started with the same ``--storage`` share one grid;
  a combination that two of them pick at the same moment is trained by one only.

Layer groups and the grid file format are in DESIGN.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import re
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lensing.config import (
    CLASSES,
    LAYER_GROUPS,
    MODELS_DIR,
    REAL_DATA_DIR,
    SIMULATED_DATA_DIR,
)
from lensing.io import atomic_torch_save, atomic_write_json

DEFAULT_GRID: dict[str, list[float]] = {
    "early": [1e-5, 1e-4],  # conv1, bn1, layer1: pretrained features, moved gently
    "middle": [1e-4],  # layer2
    "late": [1e-4, 1e-3],  # layer3, layer4
    "fc": [1e-3],  # the new 3-class head
}  # 4 combinations: small enough for a CPU; pass --grid FILE.json for a wider search
DEFAULT_STUDY = "lr_grid"  # Optuna study name; a new name starts a new search
DEFAULT_EPOCHS = 10  # epochs per combination
PRUNE_CHOICES = ("none", "median", "halving")
HEARTBEAT_INTERVAL_S = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD_S = 30  # seconds without a heartbeat after which a trial counts as dead
MAX_RETRY = 3  # automatic retries of a trial whose worker died (a re-run always retries)
STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")
# TrainConfig fields that say where or on what a worker runs, not what it trains: workers that
# share a study may differ in them. Every other field must match the study's first run.
ENVIRONMENT_KEYS = frozenset(
    {"data_dir", "out_dir", "device", "num_workers", "in_memory", "resume", "eval_batch_size"}
    | {"channels_last"}
    | {f"lr_{group}" for group in LAYER_GROUPS}
)
STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # it names a folder too
HOST = socket.gethostname()


class SearchError(ValueError):
    """A search that cannot go on as asked (a changed grid or settings for an existing study)."""


# --------------------------------------------------------------------------------------------
# The grid


def validate_grid(grid: Mapping[str, Any], source: str = "grid") -> dict[str, list[float]]:
    """Check a grid and return it normalized: groups in LAYER_GROUPS order, each list of learning
    rates (float, > 0) sorted and without repeats, so equal grids compare equal.

    Parameters
    ----------
    grid : mapping of layer group name (early, middle, late, fc) to a list of learning rates.
    source : what to call the grid in error messages (a file name).

    Raises ValueError naming ``source`` for an unknown or missing group, an empty list, or a
    learning rate that is not a positive finite number.
    """
    if not isinstance(grid, Mapping):
        raise ValueError(
            f"{source}: expected a JSON object mapping each layer group to a list of learning "
            f"rates, e.g. {json.dumps(DEFAULT_GRID)}; got {type(grid).__name__}"
        )
    unknown = sorted(set(grid) - set(LAYER_GROUPS))
    if unknown:
        raise ValueError(
            f"{source}: unknown layer group(s) {', '.join(map(repr, unknown))}; "
            f"expected exactly {', '.join(LAYER_GROUPS)}"
        )
    missing = [group for group in LAYER_GROUPS if group not in grid]
    if missing:
        raise ValueError(
            f"{source}: missing layer group(s) {', '.join(map(repr, missing))}; every group of "
            f"{', '.join(LAYER_GROUPS)} needs a list of learning rates"
        )
    normalized = {}
    for group in LAYER_GROUPS:
        values = grid[group]
        if not isinstance(values, list | tuple) or len(values) == 0:
            raise ValueError(
                f"{source}: {group!r} must be a non-empty list of learning rates; got {values!r}"
            )
        rates = []
        for value in values:
            # bool is an int to Python, and a JSON "1e-3" string is a typo, not a rate.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"{source}: learning rate {value!r} of {group!r} is not a number; "
                    "expected positive numbers like 1e-4"
                )
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"{source}: learning rate {value!r} of {group!r} must be a positive, "
                    "finite number"
                )
            rates.append(float(value))
        normalized[group] = sorted(set(rates))
    return normalized


def load_grid(path: str | Path) -> dict[str, list[float]]:
    """Read a grid file (``{"early": [1e-5, 1e-4], "middle": [...], "late": [...], "fc": [...]}``)
    and validate it (see :func:`validate_grid`); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read grid file {path}: {err.strerror or err}") from None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"grid file {path} is not valid JSON: {err}") from None
    return validate_grid(grid, source=f"grid file {path}")


def grid_size(grid: Mapping[str, list[float]]) -> int:
    """Number of learning-rate combinations in a grid."""
    return math.prod(len(values) for values in grid.values())


def trial_key(params: Mapping[str, float]) -> str:
    """The folder name of one combination, stable across runs and machines.

    ``params`` maps ``lr_<group>`` (or the bare group name) to its learning rate; the key is
    ``early=1e-05_middle=0.0001_late=0.0001_fc=0.001`` (Python's shortest round-trip float).
    """
    rates = {name.removeprefix("lr_"): float(value) for name, value in params.items()}
    return "_".join(f"{group}={rates[group]!r}" for group in LAYER_GROUPS)


def default_storage(out_dir: str | Path = MODELS_DIR) -> str:
    """``sqlite:///<out_dir>/grid_search.db`` with an absolute path."""
    return f"sqlite:///{Path(out_dir).resolve() / 'grid_search.db'}"


def open_storage(
    url: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    max_retry: int | None = MAX_RETRY,
) -> RDBStorage:
    """Optuna RDB storage with heartbeats on, re-queueing trials whose worker died.

    Parameters
    ----------
    url : SQLAlchemy URL: ``sqlite:///path.db`` on one machine, or
        ``postgresql://user:password@host:5432/db`` (needs psycopg2) to share a search between
        machines.
    heartbeat_interval : seconds between a running trial's heartbeats.
    grace_period : seconds without a heartbeat after which a running trial is failed and retried.
    max_retry : automatic retries of one combination after dead workers (None: no limit).
    """
    if heartbeat_interval <= 0 or grace_period <= 0:
        raise ValueError(
            f"heartbeat_interval {heartbeat_interval!r} and grace_period {grace_period!r}: "
            "expected positive numbers of seconds"
        )
    if grace_period <= heartbeat_interval:
        raise ValueError(
            f"grace_period {grace_period!r} s must exceed heartbeat_interval "
            f"{heartbeat_interval!r} s, or live trials would be taken for dead ones"
        )
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Two workers on one SQLite file wait for each other's writes instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
        path = url.partition(":///")[2]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=_retry_callback(max_retry),
                )
        except sqlalchemy.exc.DBAPIError:
            # Workers started together on a new database race to create its tables; the
            # loser finds them made on the next try.
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _retry_callback(max_retry: int | None) -> RetryHeartbeatStaleTrialCallback:
    # The retried trial inherits the reports of the dead one, so a pruner sees the whole
    # learning curve of a resumed combination.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(
            max_retry=max_retry, inherit_intermediate_values=True
        )


def _make_pruner(prune: str) -> optuna.pruners.BasePruner:
    if prune == "none":
        return optuna.pruners.NopPruner()
    if prune == "median":
        # Steps are epochs done (1, 2, ...): a combination can be stopped from its first
        # epoch on, below the median of the others at that epoch, once two have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    raise ValueError(f"unknown prune mode {prune!r}; expected one of {', '.join(PRUNE_CHOICES)}")


# --------------------------------------------------------------------------------------------
# Reading the study


def _combo(trial: FrozenTrial) -> tuple[float, ...] | None:
    """The learning rates of a trial in LAYER_GROUPS order, or None before they are set."""
    try:
        return tuple(float(trial.params[f"lr_{group}"]) for group in LAYER_GROUPS)
    except KeyError:
        return None


def _own_attr(trial: FrozenTrial, name: str) -> dict | None:
    """A user attribute stamped with the trial's own number; None when it was inherited.

    A retried trial starts with a copy of the dead trial's user attributes, so whatever a worker
    writes about *this* trial (who runs it, whether it trains) carries the trial number.
    """
    value = trial.user_attrs.get(name)
    if isinstance(value, dict) and value.get("trial") == trial.number:
        return value
    return None


def _is_duplicate(trial: FrozenTrial) -> bool:
    return _own_attr(trial, "duplicate_of") is not None


def _combos(grid: Mapping[str, list[float]]) -> list[tuple[float, ...]]:
    return list(itertools.product(*(grid[group] for group in LAYER_GROUPS)))


def _group_trials(trials: list[FrozenTrial]) -> dict[tuple[float, ...], list[FrozenTrial]]:
    by_combo: dict[tuple[float, ...], list[FrozenTrial]] = {}
    for trial in trials:
        combo = _combo(trial)
        if combo is not None and not _is_duplicate(trial):
            by_combo.setdefault(combo, []).append(trial)
    return by_combo


def _combo_state(trials: list[FrozenTrial]) -> str:
    """COMPLETE/PRUNED when any trial finished it, else RUNNING, WAITING, FAIL, or NEW."""
    states = {t.state for t in trials}
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        if state in states:
            return state.name
    if TrialState.WAITING in states:
        return "WAITING"
    return "FAIL" if states else "NEW"


def _representative(trials: list[FrozenTrial]) -> FrozenTrial:
    """The trial that speaks for a combination in the results table."""
    rank = {s: i for i, s in enumerate(STATES)}
    return min(trials, key=lambda t: (rank[t.state.name], -(t.value or 0.0), -t.number))


def _epochs_done(trial: FrozenTrial) -> int:
    if "epochs_done" in trial.user_attrs:
        return int(trial.user_attrs["epochs_done"])
    return len(trial.intermediate_values)


def _trial_auc(trial: FrozenTrial) -> float:
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    return max(values) if values else math.nan


def _load_study(storage: str | RDBStorage, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ValueError(
            f"no study {study_name!r} in the search storage; it holds "
            f"{', '.join(map(repr, names)) or 'no study'}"
        ) from None


def results_table(
    storage: str | RDBStorage | None = None,
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
        db = Path(out_dir) / "grid_search.db"
        if not db.is_file():
            raise FileNotFoundError(
                f"no search database {db}; run `python -m lensing search --out {out_dir}` first"
            )
        storage = default_storage(out_dir)
    study = _load_study(storage, study_name)
    return _table(study)


def _table(study: optuna.Study) -> pd.DataFrame:
    grid = study.user_attrs.get("grid")
    epochs = study.user_attrs.get("settings", {}).get("epochs")
    by_combo = _group_trials(study.get_trials(deepcopy=False))
    combos = list(by_combo)
    if grid is not None:
        in_grid = _combos(grid)
        combos = in_grid + [c for c in combos if c not in set(in_grid)]
    rows = []
    for combo in combos:
        trials = by_combo.get(combo, [])
        row = {f"lr_{group}": lr for group, lr in zip(LAYER_GROUPS, combo, strict=True)}
        if trials:
            trial = _representative(trials)
            done = _epochs_done(trial)
            state = _combo_state(trials)
            saved = max(0, epochs - done) if state == "PRUNED" and epochs else 0
            row |= {
                "val_auc": _trial_auc(trial),
                "epochs": done,
                "state": state,
                "trial": trial.number,
                "epochs_saved": saved,
            }
        else:
            row |= {"val_auc": math.nan, "epochs": 0, "state": "WAITING", "trial": -1}
            row["epochs_saved"] = 0
        row["key"] = trial_key(dict(zip(LAYER_GROUPS, combo, strict=True)))
        rows.append(row)
    columns = [f"lr_{g}" for g in LAYER_GROUPS]
    columns += ["val_auc", "epochs", "state", "trial", "epochs_saved", "key"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values("val_auc", ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    table.attrs = {
        "study": study.study_name,
        "epochs": epochs,
        "grid": grid,
        "epochs_saved": int(table["epochs_saved"].sum()),
    }
    return table


def format_table(table: pd.DataFrame) -> str:
    """A results table as GitHub markdown (without needing ``tabulate``)."""
    headers = [str(c) for c in table.columns]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return ""
            return f"{value:.4f}" if 0.01 <= abs(value) < 1000 else f"{value:g}"
        return str(value)

    rows = [[cell(v) for v in record] for record in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The best model


def _trials_dir(out_dir: Path, study_name: str) -> Path:
    return Path(out_dir) / "trials" / study_name


def publish_best(study: optuna.Study, out_dir: str | Path) -> dict | None:
    """Copy the best finished trial's weights to ``<out_dir>/best_model.pth`` and write
    ``<out_dir>/best_params.json``; skipped when they already describe that trial.

    Returns the best_params dict, or None when no trial has completed (or the best trial's
    folder is on another machine, which a warning names).
    """
    out_dir = Path(out_dir)
    completed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and not _is_duplicate(t)
    ]
    if not completed:
        return None
    best = max(completed, key=lambda t: (t.value, -t.number))
    key = trial_key(best.params)
    folder = _trials_dir(out_dir, study.study_name) / key
    source = folder / "best_model.pth"
    params_path = out_dir / "best_params.json"
    if not source.is_file():
        worker = best.user_attrs.get("worker") or {}
        warnings.warn(
            f"the best trial {best.number} ({key}) has no weights at {source}; it was trained "
            f"on {worker.get('host', 'another machine')}: put --out on a shared file system "
            "to collect every worker's models in one place",
            stacklevel=2,
        )
        return None
    try:
        previous = json.loads(params_path.read_text())
    except (OSError, ValueError):
        previous = None
    same = (
        isinstance(previous, dict)
        and previous.get("study") == study.study_name
        and previous.get("trial_key") == key
        and previous.get("source_mtime_ns") == source.stat().st_mtime_ns
        and (out_dir / "best_model.pth").is_file()
    )
    if same:
        return previous
    return _publish_from(folder, out_dir, study.study_name, best.number, key)


def _publish_from(folder: Path, out_dir: Path, study_name: str, number: int, key: str) -> dict:
    from lensing.train import load_checkpoint

    source = folder / "best_model.pth"
    mtime = source.stat().st_mtime_ns
    best = load_checkpoint(source)
    history = best.get("history") or []
    rolling = folder / "checkpoint.pth"
    if rolling.is_file():
        # The rolling checkpoint carries the whole learning curve, past the best epoch too.
        history = load_checkpoint(rolling).get("history", history)
    rates = {g: float(best["params"].get(f"lr_{g}", best["params"].get(g))) for g in LAYER_GROUPS}
    best |= {
        "params": rates,
        "classes": list(best.get("classes", CLASSES)),
        "history": history,
        "trial": number,
        "trial_key": key,
        "study": study_name,
    }
    atomic_torch_save(best, out_dir / "best_model.pth")
    summary = rates | {
        "val_auc": float(best["val_auc"]),
        "trial": number,
        "trial_key": key,
        "study": study_name,
        "epochs": len(history),
        "best_epoch": best.get("epoch"),
        "pretrained": best.get("pretrained"),
        "source_mtime_ns": mtime,
    }
    atomic_write_json(out_dir / "best_params.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# The search


@dataclasses.dataclass
class _Progress:
    trained: int = 0  # trials this worker trained (not counting duplicate skips)
    current: FrozenTrial | None = None
    current_key: str | None = None
    current_epochs: int = 0


class _Search:
    """One worker's view of a study: its objective, its bookkeeping, its loop."""

    def __init__(
        self,
        study: optuna.Study,
        grid: dict[str, list[float]],
        *,
        data_dir: Path,
        out_dir: Path,
        epochs: int,
        base_config: dict,
        prune: str,
        progress: bool,
        heartbeat_interval: float,
        grace_period: float,
        datasets: dict | None = None,
    ) -> None:
        self.study = study
        self.grid = grid
        self.data_dir = data_dir
        self.out_dir = out_dir
        self.epochs = epochs
        self.base_config = base_config
        self.prune = prune
        self.progress = progress
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.datasets = datasets
        self.combos = _combos(grid)
        self.trials_dir = _trials_dir(out_dir, study.study_name)
        self.state = _Progress()

    def say(self, message: str) -> None:
        if self.progress:
            print(f"[search] {message}", flush=True)

    # ---- the objective

    def objective(self, trial: optuna.Trial) -> float:
        from lensing.train import TrainConfig

        params = {
            f"lr_{group}": trial.suggest_categorical(f"lr_{group}", self.grid[group])
            for group in LAYER_GROUPS
        }
        key = trial_key(params)
        trial.set_user_attr("key", key)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid(), "trial": trial.number})
        holder = self._claim(trial, params)
        if holder is not None:
            trial.set_user_attr("duplicate_of", {"trial": trial.number, "holder": holder})
            self.say(f"trial {trial.number}: {key} is taken by trial {holder}; skipped")
            raise optuna.TrialPruned(f"combination {key} is already taken by trial {holder}")

        self.state.current, self.state.current_key, self.state.current_epochs = trial, key, 0
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        folder = self.trials_dir / key
        done_before = len(self._done_combos())
        self.say(
            f"trial {trial.number}: {key} ({done_before + 1}/{len(self.combos)})"
            + (f", retrying trial {retried}" if retried is not None else "")
        )
        config = TrainConfig.from_dict(
            self.base_config
            | params
            | {
                "data_dir": str(self.data_dir),
                "out_dir": str(folder),
                "epochs": self.epochs,
                "resume": True,
            }
        )
        first_epoch: list[int] = []
        # A retried trial inherits the dead one's reports; Optuna ignores (and warns about) a
        # step reported twice, which happens only when a corrupt checkpoint forced a restart.
        reported = set(frozen.intermediate_values)

        def on_epoch_end(epoch: int, entry: dict) -> None:
            done = int(entry.get("epoch", epoch))
            if not first_epoch:
                first_epoch.append(done)
                trial.set_user_attr("start_epoch", done - 1)
            self.state.current_epochs = done
            trial.set_user_attr("epochs_done", done)
            auc = float(entry["val_auc"])
            if math.isfinite(auc) and done not in reported:
                trial.report(auc, step=done)
            if self.prune != "none" and done < self.epochs and trial.should_prune():
                self.say(f"trial {trial.number}: {key} pruned after epoch {done} (AUC {auc:.4f})")
                raise optuna.TrialPruned(
                    f"{key}: val AUC {auc:.4f} after epoch {done} is below the pruner's bar"
                )

        # On Ctrl-C, current stays set, so the message can say where the search stopped.
        result = self._fit(config, folder, trial, key, on_epoch_end)
        self.state.current = None
        trial.set_user_attr("start_epoch", int(result["start_epoch"]))
        trial.set_user_attr("epochs_done", len(result["history"]))
        auc = result["best_val_auc"]
        auc = math.nan if auc is None else float(auc)
        if not math.isfinite(auc):
            raise ValueError(
                f"trial {trial.number} ({key}): validation AUC is {auc}; expected a number "
                f"(does every class of {CLASSES} appear in {self.data_dir}/val?)"
            )
        self.state.trained += 1
        return auc

    def _fit(self, config, folder: Path, trial: optuna.Trial, key: str, on_epoch_end) -> dict:
        """fit, resuming; an unreadable checkpoint is moved aside and the combination restarts."""
        from lensing.train import CheckpointError, fit

        try:
            return fit(
                config, datasets=self.datasets, on_epoch_end=on_epoch_end, progress=self.progress
            )
        except CheckpointError as err:
            bad = _quarantine(folder, err)
            warnings.warn(
                f"trial {trial.number} ({key}): unreadable checkpoint ({err}); moved it to "
                f"{bad} and training this combination again from scratch",
                stacklevel=2,
            )
            trial.set_user_attr("corrupt_checkpoint", str(bad))
            return fit(
                config, datasets=self.datasets, on_epoch_end=on_epoch_end, progress=self.progress
            )

    def _claim(self, trial: optuna.Trial, params: dict) -> int | None:
        """Decide whether this trial trains its combination; return the holder's number if not.

        GridSampler can hand one combination to two workers at the same moment. Each trial
        writes its learning rates (suggest), then reads the others: it yields to a trial of the
        same combination that finished, that claimed it, or that is undecided with a lower
        number. Undecided higher-numbered ones are waited for, since they may not have seen
        this one. Of any two, at least one reads after the other wrote, so exactly one trains.
        """
        combo = tuple(params[f"lr_{g}"] for g in LAYER_GROUPS)
        deadline = time.monotonic() + self.grace_period + 2 * self.heartbeat_interval
        while True:
            waiting_for = None
            for other in self.study.get_trials(deepcopy=False):
                if other.number == trial.number or _combo(other) != combo:
                    continue
                if _is_duplicate(other):
                    continue
                if other.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    return other.number
                if other.state != TrialState.RUNNING:
                    continue
                claim = _own_attr(other, "claim")
                if claim is not None or other.number < trial.number:
                    return other.number
                waiting_for = other.number
            if waiting_for is None or time.monotonic() > deadline:
                trial.set_user_attr("claim", {"trial": trial.number})
                return None
            time.sleep(0.2)

    # ---- bookkeeping

    def _by_combo(self) -> dict[tuple[float, ...], list[FrozenTrial]]:
        return _group_trials(self.study.get_trials(deepcopy=False))

    def _done_combos(self) -> list[tuple[float, ...]]:
        by_combo = self._by_combo()
        return [
            c for c in self.combos if _combo_state(by_combo.get(c, [])) in ("COMPLETE", "PRUNED")
        ]

    def fail_dead_trials(self) -> list[int]:
        """Fail RUNNING trials whose worker is gone; the retry callback re-queues them.

        Dead means: a worker process on this host that no longer exists (known at once), or a
        heartbeat older than the grace period (any host; Optuna's ``fail_stale_trials``).
        """
        storage = self.study._storage
        callback = storage.get_heartbeat_stale_trial_callback()
        failed = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = _own_attr(trial, "worker")
            if worker is None or worker.get("host") != HOST:
                continue
            if worker.get("pid") == os.getpid():
                # One search runs at a time in a process: a RUNNING trial of this process that
                # is not the current one was left behind by an earlier, interrupted call.
                current = self.state.current
                if current is not None and current.number == trial.number:
                    continue
            elif _alive(worker.get("pid")):
                continue
            try:
                # What optuna.storages.fail_stale_trials does for a stale heartbeat; Study.tell
                # would run the sampler's after_trial, which may stop() outside optimize.
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                    failed.append(trial.number)
                    if callback is not None:
                        callback(self.study, storage.get_trial(trial._trial_id))
            except UpdateFinishedTrialError:
                pass  # another worker got there first
        failed_states = (TrialState.FAIL,)
        before = {t.number for t in self.study.get_trials(deepcopy=False, states=failed_states)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        after = {t.number for t in self.study.get_trials(deepcopy=False, states=failed_states)}
        failed += sorted(after - before)
        for number in failed:
            self.say(f"trial {number}: its worker is gone; queued to resume from its checkpoint")
        return failed

    def requeue(self, include_failed: bool) -> list[str]:
        """Queue a trial for each combination left with no live or finished trial.

        Combinations whose trials were all skipped as duplicates are always re-queued (no
        one trained them). Failed ones (Ctrl-C, an error, retries used up) only when
        ``include_failed``: a user's re-run, not a loop that would retry a crash forever.
        """
        queued = []
        retry = _retry_callback(max_retry=None)
        everything = self.study.get_trials(deepcopy=False)
        for combo in self.combos:
            trials = [t for t in everything if _combo(t) == combo]
            real = [t for t in trials if not _is_duplicate(t)]
            state = _combo_state(real)
            if state != "FAIL" and not (state == "NEW" and trials):
                continue
            if state == "FAIL" and not include_failed:
                continue
            template = max(real or trials, key=lambda t: t.number)
            retry(self.study, template)
            queued.append(trial_key(template.params))
        return queued

    def pending(self) -> dict[str, list[tuple[float, ...]]]:
        """Combinations by state: NEW (never tried), WAITING, RUNNING, FAIL."""
        by_combo = self._by_combo()
        out: dict[str, list[tuple[float, ...]]] = {
            "NEW": [],
            "WAITING": [],
            "RUNNING": [],
            "FAIL": [],
        }
        for combo in self.combos:
            state = _combo_state(by_combo.get(combo, []))
            if state in out:
                out[state].append(combo)
        return out

    # ---- the loop

    def run(self, n_trials: int | None) -> None:
        self.fail_dead_trials()
        queued = self.requeue(include_failed=True)
        for key in queued:
            self.say(f"{key}: queued again; it resumes from its last checkpoint")
        waited_on: set[int] = set()
        while True:
            if n_trials is not None and self.state.trained >= n_trials:
                self.say(f"trained {self.state.trained} trial(s) as asked (--n-trials); stopping")
                return
            pending = self.pending()
            if not any(pending.values()):
                return
            if pending["NEW"] or pending["WAITING"]:
                if self.datasets is None:
                    from lensing.data import load_splits

                    # Once per process, outside any trial: a data problem is not a failed trial.
                    self.datasets = load_splits(
                        self.data_dir,
                        in_memory=self.base_config.get("in_memory", True),
                        progress=self.progress,
                    )
                self.study.optimize(
                    self.objective,
                    n_trials=1,
                    callbacks=[lambda study, trial: publish_best(study, self.out_dir)],
                )
                self.fail_dead_trials()
                self.requeue(include_failed=False)
                continue
            if pending["RUNNING"]:
                running = [
                    t
                    for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if _combo(t) in set(pending["RUNNING"])
                ]
                fresh = {t.number for t in running} - waited_on
                if fresh:
                    waited_on |= fresh
                    who = ", ".join(
                        f"trial {t.number} on {(t.user_attrs.get('worker') or {}).get('host')}"
                        for t in running
                    )
                    self.say(
                        f"waiting for {who}; a trial whose heartbeat stops for "
                        f"{self.grace_period} s is taken over here"
                    )
                time.sleep(self.heartbeat_interval)
                self.fail_dead_trials()
                self.requeue(include_failed=False)
                continue
            keys = ", ".join(
                trial_key(dict(zip(LAYER_GROUPS, c, strict=True))) for c in pending["FAIL"]
            )
            self.say(f"{len(pending['FAIL'])} combination(s) failed: {keys}; re-run to retry")
            return


def _alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (True when unsure)."""
    if not isinstance(pid, int) or pid <= 0 or os.name == "nt":
        return True  # on Windows os.kill(pid, 0) would terminate the process: trust heartbeats
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else, or the platform cannot tell
    return True


def _quarantine(folder: Path, err: Exception) -> Path:
    """Move the unreadable checkpoint named by ``err`` aside (``*.corrupt``) and return it."""
    candidates = (folder / "checkpoint.pth", folder / "best_model.pth")
    named = [p for p in candidates if str(p) in str(err)]
    path = getattr(err, "path", None)
    bad = Path(path) if path else (named[0] if named else folder / "checkpoint.pth")
    target = bad.with_name(bad.name + f".corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    if bad.exists():
        os.replace(bad, target)
    return target


def _settings(epochs: int, prune: str, base_config: dict) -> dict:
    """What a study's trials were trained with, apart from learning rates and environment."""
    from lensing.train import TrainConfig

    config = TrainConfig.from_dict(base_config | {"epochs": epochs})
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in ENVIRONMENT_KEYS}
    return json.loads(json.dumps(fields | {"prune": prune}, default=str))


def _check_study(study: optuna.Study, grid: dict, settings: dict, command_hint: str) -> None:
    """Refuse to mix a changed grid or changed training settings into an existing study."""
    stored_grid = study.user_attrs.get("grid")
    if stored_grid is None:
        # A study made before (or outside) this module: its trials' GridSampler spaces tell.
        spaces = {
            json.dumps(t.system_attrs["search_space"], sort_keys=True)
            for t in study.get_trials(deepcopy=False)
            if "search_space" in t.system_attrs
        }
        mine = json.dumps({f"lr_{g}": grid[g] for g in LAYER_GROUPS}, sort_keys=True)
        if spaces - {mine}:
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
            f"but this run asks for {json.dumps(grid)}. Optuna's GridSampler would mix the "
            f"two; start the new grid under a new --study name{command_hint}, or re-run with "
            "the original grid to resume"
        )
    stored = study.user_attrs.get("settings", {})
    changed = {k: (stored[k], v) for k, v in settings.items() if k in stored and stored[k] != v}
    if changed:
        listed = "; ".join(f"{k}: study {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise SearchError(
            f"study {study.study_name!r} was trained with other settings ({listed}); "
            f"re-run with the study's settings to resume it, or start a new --study name"
            f"{command_hint} (to train the best model longer, use continue_training)"
        )


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
) -> pd.DataFrame:
    """Run (or resume, or join) the grid search and return its results table.

    Parameters
    ----------
    data_dir : data folder with train/ and val/ (DESIGN.md format).
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
    progress : print progress and per-epoch lines.
    heartbeat_interval, grace_period : seconds (see :func:`open_storage`).
    datasets : already loaded ``lensing.data.load_splits(data_dir)``; loaded once otherwise.
    resume_hint : how to say "run this again" in the Ctrl-C message (the CLI passes its command).

    Returns the :func:`results_table`. Ctrl-C (KeyboardInterrupt) stops after saying how to
    resume, with the running combination's checkpoint intact, and is raised again.
    """
    out_dir = Path(out_dir)
    if not STUDY_NAME_PATTERN.match(study_name):
        raise ValueError(
            f"study name {study_name!r}; expected letters, digits, '.', '_' or '-' "
            "(it also names the folder of the study's trials)"
        )
    if type(epochs) is not int or epochs < 1:
        raise ValueError(f"epochs {epochs!r}; expected a whole number >= 1")
    if n_trials is not None and (type(n_trials) is not int or n_trials < 1):
        raise ValueError(f"n_trials {n_trials!r}; expected None or a whole number >= 1")
    if prune not in PRUNE_CHOICES:
        raise ValueError(f"prune {prune!r}; expected one of {', '.join(PRUNE_CHOICES)}")
    if grid is None:
        grid = validate_grid(DEFAULT_GRID, source="DEFAULT_GRID")
    elif isinstance(grid, str | Path):
        grid = load_grid(grid)
    else:
        grid = validate_grid(grid)
    base_config = dict(base_config or {})
    chosen_here = {"data_dir", "out_dir", "resume", "epochs"} | {f"lr_{g}" for g in LAYER_GROUPS}
    clashes = sorted(set(base_config) & chosen_here)
    if clashes:
        raise ValueError(
            f"base_config sets {', '.join(clashes)}; the search chooses these itself (learning "
            "rates from the grid, epochs, data_dir, out_dir and resume from run_search's "
            "arguments)"
        )
    settings = _settings(epochs, prune, base_config)
    storage_url = storage or default_storage(out_dir)

    with _quiet_optuna():
        return _search(
            storage_url,
            study_name,
            grid,
            dict(
                data_dir=Path(data_dir),
                out_dir=out_dir,
                epochs=epochs,
                base_config=base_config,
                prune=prune,
                progress=progress,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                datasets=datasets,
            ),
            settings,
            n_trials,
            resume_hint,
        )


@contextlib.contextmanager
def _quiet_optuna():
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


def _search(
    storage_url: str,
    study_name: str,
    grid: dict[str, list[float]],
    options: dict,
    settings: dict,
    n_trials: int | None,
    resume_hint: str | None,
) -> pd.DataFrame:
    """run_search once its arguments are checked; ``options`` are _Search's keywords."""
    out_dir, prune, epochs = options["out_dir"], options["prune"], options["epochs"]
    hint = f" (this run: {resume_hint})" if resume_hint else ""
    rdb = open_storage(storage_url, options["heartbeat_interval"], options["grace_period"])
    space = {f"lr_{group}": grid[group] for group in LAYER_GROUPS}
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        sampler=optuna.samplers.GridSampler(space, seed=0),
        pruner=_make_pruner(prune),
        direction="maximize",
        load_if_exists=True,
    )
    _check_study(study, grid, settings, hint)
    search = _Search(study, grid, **options)
    n_combos = len(search.combos)
    done = len(search._done_combos())
    search.say(
        f"study {study_name!r} in {_redact(storage_url)}: {done}/{n_combos} combinations "
        f"finished, {epochs} epoch(s) each"
    )
    if done == n_combos:
        search.say("the search is complete: nothing to train")
    try:
        search.run(n_trials)
    except KeyboardInterrupt:
        _say_interrupted(search, resume_hint)
        raise
    finally:
        best = publish_best(study, out_dir)
    table = _table(study)
    finished = int(table["state"].isin(["COMPLETE", "PRUNED"]).sum())
    if options["progress"]:
        if finished == n_combos and done < n_combos:
            search.say(f"the search is complete: {n_combos} combinations")
        if prune != "none":
            search.say(f"pruning saved {table.attrs['epochs_saved']} epoch(s)")
        if best is not None:
            search.say(
                f"best: {best['trial_key']} val AUC {best['val_auc']:.4f} (trial "
                f"{best['trial']}) -> {out_dir / 'best_model.pth'}"
            )
    return table


def _say_interrupted(search: _Search, resume_hint: str | None) -> None:
    current = search.state.current
    where = (
        ""
        if current is None
        else (
            f" during trial {current.number} ({search.state.current_key}) after epoch "
            f"{search.state.current_epochs}; its checkpoint is intact"
        )
    )
    again = resume_hint or "run_search(...) again with the same arguments"
    print(f"\n[search] interrupted{where}. To resume, run: {again}", file=sys.stderr, flush=True)


def _redact(url: str) -> str:
    """The storage URL without its password, for printing."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# --------------------------------------------------------------------------------------------
# Training the best model further


def continue_training(
    out_dir: str | Path = MODELS_DIR,
    additional_epochs: int = 5,
    data_dir: str | Path | None = None,
    datasets: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train the search's best combination ``additional_epochs`` more, from its checkpoint.

    Reads ``<out_dir>/best_params.json``, resumes the best trial's rolling checkpoint in
    ``<out_dir>/trials/<study>/<key>/`` with epochs = done + additional, and re-publishes
    ``best_model.pth`` / ``best_params.json`` only when the validation AUC improved.

    Parameters
    ----------
    out_dir : the search's models folder.
    additional_epochs : epochs to add (>= 1).
    data_dir : data folder; default the one the trial was trained on.
    datasets : already loaded splits of that folder.
    progress : per-epoch lines.

    Returns {"trial_key", "before" (val AUC), "after", "improved" (bool), "epochs_trained",
    "epochs_total"}.
    """
    from lensing.train import TrainConfig, fit, load_checkpoint

    out_dir = Path(out_dir)
    if type(additional_epochs) is not int or additional_epochs < 1:
        raise ValueError(f"additional_epochs {additional_epochs!r}; expected a whole number >= 1")
    params_path = out_dir / "best_params.json"
    if not params_path.is_file():
        raise FileNotFoundError(f"no {params_path}: run the search first")
    best = json.loads(params_path.read_text())
    folder = _trials_dir(out_dir, best["study"]) / best["trial_key"]
    rolling = load_checkpoint(folder / "checkpoint.pth")
    fields = {k: v for k, v in rolling["config"].items() if k in _config_fields()}
    done = int(rolling["epoch"])
    fields |= {"epochs": done + additional_epochs, "resume": True, "out_dir": str(folder)}
    if data_dir is not None:
        fields["data_dir"] = str(data_dir)
    config = TrainConfig.from_dict(fields)
    result = fit(config, datasets=datasets, progress=progress)
    before = float(best["val_auc"])
    after = float(result["best_val_auc"])
    improved = after > before
    if improved:
        _publish_from(folder, out_dir, best["study"], int(best["trial"]), best["trial_key"])
    return {
        "trial_key": best["trial_key"],
        "before": before,
        "after": after,
        "improved": improved,
        "epochs_trained": int(result["epochs_trained"]),
        "epochs_total": len(result["history"]),
    }


def _config_fields() -> set[str]:
    from lensing.train import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


# --------------------------------------------------------------------------------------------
# Command line


def get_args_parser() -> argparse.ArgumentParser:
    from lensing.train import AUGMENT_MODES, SCHEDULES

    parser = argparse.ArgumentParser(
        prog="python -m lensing search",
        description="Resumable grid search over the per-group learning rates. Re-run the same "
        "command to resume; start it on several machines with one --storage to share the grid.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REAL_DATA_DIR if REAL_DATA_DIR.is_dir() else SIMULATED_DATA_DIR,
        help="data folder with train/ and val/ (%(default)s)",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="models folder (%(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs per combination (%(default)s)"
    )
    parser.add_argument(
        "--grid", type=Path, help="grid JSON file; default " + json.dumps(DEFAULT_GRID)
    )
    parser.add_argument(
        "--storage",
        help="SQLAlchemy URL (default sqlite:///<out>/grid_search.db;"
        " postgresql://user:pass@host/db to share between machines)",
    )
    parser.add_argument("--study", default=DEFAULT_STUDY, help="study name (%(default)s)")
    parser.add_argument("--batch-size", type=int, help="images per batch (TrainConfig default)")
    parser.add_argument("--pretrained", help="imagenet, none or a weights file")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--augment", choices=AUGMENT_MODES, help="(TrainConfig default)")
    parser.add_argument("--schedule", choices=SCHEDULES, help="lr schedule (TrainConfig default)")
    parser.add_argument(
        "--prune",
        choices=PRUNE_CHOICES,
        default="none",
        help="stop lagging combinations early (%(default)s: full grid)",
    )
    parser.add_argument("--n-trials", type=int, help="this worker stops after N combinations")
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        default=HEARTBEAT_INTERVAL_S,
        help="seconds between heartbeats (%(default)s)",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        default=GRACE_PERIOD_S,
        help="seconds without a heartbeat before a trial is retried (%(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    base_config = {
        key: value
        for key, value in {
            "batch_size": args.batch_size,
            "pretrained": args.pretrained,
            "precision": args.precision,
            "seed": args.seed,
            "augment": args.augment,
            "schedule": args.schedule,
        }.items()
        if value is not None
    }
    command = "python -m lensing search " + shlex.join(argv)
    try:
        table = run_search(
            args.data,
            out_dir=args.out,
            epochs=args.epochs,
            grid=args.grid,
            storage=args.storage,
            study_name=args.study,
            base_config=base_config,
            prune=args.prune,
            n_trials=args.n_trials,
            progress=not args.quiet,
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            resume_hint=command,
        )
    except KeyboardInterrupt:
        return 130
    except (SearchError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = ["key"] + ([] if args.prune != "none" else ["epochs_saved"])
    print(format_table(table.drop(columns=shown)))
    return 0
