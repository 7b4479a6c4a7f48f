"""Getting a search going again after a death: dead workers, unreadable checkpoints, re-queueing.

- A trial whose worker died without a word (SIGKILL, power loss, a restarted kernel) stays
  RUNNING in the database. Its worker records a heartbeat; a trial whose heartbeat is older than
  the grace period is failed (Optuna's ``fail_stale_trials``), and a trial whose worker process
  on this same machine no longer exists is failed at once (``Study.tell``). Either way Optuna's
  retry callback (``RetryHeartbeatStaleTrialCallback``) queues a copy with the same learning
  rates, which resumes the same folder's checkpoint.
- A combination left with failed trials only (Ctrl-C, an error, retries used up) is queued
  again by a user's re-run.
- A checkpoint that cannot be read is moved aside (``*.corrupt-<time>``) and its combination
  trains from scratch.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lensing.model.checkpoint import BEST_MODEL, CHECKPOINT
from lensing.search.grid import Combo
from lensing.search.storage import retry_callback
from lensing.search.study import combo_state, frozen_trial, group_trials, own_attr

HOST = socket.gethostname()
RetryCallback = Callable[[optuna.Study, FrozenTrial], None]  # queues a copy of a failed trial


def alive(pid: Any) -> bool:
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


def fail_dead_trials(
    study: optuna.Study, retry: RetryCallback | None, current: int | None = None
) -> list[int]:
    """Fail RUNNING trials whose worker is gone, and queue their retries; returns the failed
    trials' numbers.

    Dead means: a worker process on this host that no longer exists (known at once), a trial
    of this very process other than ``current`` (left behind by an earlier, interrupted call in
    this process: one search runs at a time in a process), or a heartbeat older than the grace
    period (any host; Optuna's ``fail_stale_trials``). ``retry``: the callback the storage was
    opened with (``RDBStorage.get_heartbeat_stale_trial_callback()``), called with each trial
    failed here as Optuna calls it with each stale one.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = own_attr(trial, "worker")
        if worker is None or worker.get("host") != HOST or trial.number == current:
            continue
        if worker.get("pid") != os.getpid() and alive(worker.get("pid")):
            continue
        dead = _fail(study, trial.number)
        if dead is not None:
            failed.append(trial.number)
            if retry is not None:
                retry(study, dead)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return failed + sorted(after - before - set(failed))


def _fail(study: optuna.Study, number: int) -> FrozenTrial | None:
    """Tell Optuna a RUNNING trial failed; returns it failed, or None when another worker
    finished it (or failed it) first."""
    try:
        return study.tell(number, state=TrialState.FAIL)
    except (ValueError, UpdateFinishedTrialError):
        # ValueError: it was finished when tell looked; UpdateFinishedTrialError: between
        # tell's look and its write. Anything else is an error of its own.
        if frozen_trial(study, number).state == TrialState.RUNNING:
            raise
        return None


def retried_trial(trial: FrozenTrial) -> int | None:
    """The number of the first trial ``trial`` retries (its copy, its copy's copy...), or None
    for a trial that retries none: Optuna's ``retried_trial_number``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # experimental since Optuna 2.8
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def requeue(study: optuna.Study, combos: list[Combo], include_failed: bool) -> list[str]:
    """Queue a trial for each combination of ``combos`` with no live or finished trial; returns
    their folder keys.

    A combination with no trial at all (one that only ever had duplicates, or a study begun
    before the queue) is always queued. One whose trials all failed (Ctrl-C, an error, retries
    used up) only when ``include_failed``: a user's re-run, not a loop that would retry a crash
    forever. A failed combination's retry inherits the last trial's reports and folder.
    """
    queued = []
    retry = retry_callback(max_retry=None)
    by_combo = group_trials(study.get_trials(deepcopy=False))
    for combo in combos:
        trials = by_combo.get(combo, [])
        state = combo_state(trials)
        if state == "NEW":
            study.enqueue_trial(combo.params, user_attrs={"key": combo.key})
        elif state == "FAIL" and include_failed:
            retry(study, max(trials, key=lambda t: t.number))
        else:
            continue
        queued.append(combo.key)
    return queued


def quarantine(folder: Path, err: Exception) -> Path:
    """Move the unreadable checkpoint named by ``err`` aside (``*.corrupt-<time>``); returns
    where it went."""
    candidates = (folder / CHECKPOINT, folder / BEST_MODEL)
    named = [p for p in candidates if str(p) in str(err)]
    path = getattr(err, "path", None)
    bad = Path(path) if path else (named[0] if named else folder / CHECKPOINT)
    target = bad.with_name(bad.name + f".corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    if bad.exists():
        os.replace(bad, target)
    return target
