"""One worker of a search: it takes queued combinations one at a time and trains each.

Each trial runs in ``Study.optimize`` (one trial per call): Optuna takes the first queued trial,
records its heartbeat in a thread while it trains, by which other workers tell it is alive, and
tells how it ended. Each combination trains with :func:`lensing.training.fit.fit` in
``<out>/trials/<study>/<key>/``, which keeps a rolling checkpoint every epoch, and reports its
validation AUC after every epoch (``trial.report``), so a pruner can stop a lagging one. A
retried trial has the same learning rates, so it lands in the same folder and resumes from the
last finished epoch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.data.dataset import load_splits
from lensing.model.checkpoint import CheckpointError
from lensing.search.grid import Combo, grid_combos, grid_size
from lensing.search.publish import publish_best, trials_dir
from lensing.search.queueing import holder
from lensing.search.ranks import share_config
from lensing.search.recovery import (
    HOST,
    RetryCallback,
    fail_dead_trials,
    quarantine,
    requeue,
    retried_trial,
)
from lensing.search.study import STRAY, combos_by_state, frozen_trial, own_attr, trial_combo
from lensing.training.fit import TrainConfig, fit


@dataclasses.dataclass
class Progress:
    """Where a worker is: what it trained, and the trial it is training now."""

    trained: int = 0  # trials this worker trained (not counting duplicates that stepped aside)
    current: int | None = None  # number of the trial in training
    current_key: str | None = None
    current_epochs: int = 0  # epochs of the current combination done


@dataclasses.dataclass
class Objective:
    """Trains the combination of one queued trial; ``objective(trial)`` returns its best
    validation AUC, or raises ``optuna.TrialPruned`` (pruned, or stepped aside).

    ``config`` is the template every combination trains with: its data_dir, epochs and
    training settings, ``resume`` on, and ``out_dir`` the search's models folder. Each
    combination replaces the learning rates, and ``out_dir`` with its own trial folder.
    """

    study: optuna.Study
    grid: dict[str, list[float]]
    config: TrainConfig
    prune: str
    log: Callable[[str], None]
    progress: bool = True  # progress bars
    datasets: dict | None = None
    state: Progress = dataclasses.field(default_factory=Progress)

    @property
    def out_dir(self) -> Path:
        """The search's models folder (trials/, best_model.pth, best_params.json)."""
        return Path(self.config.out_dir)

    def load_data(self) -> None:
        """Read the data once per process, outside any trial: a data problem is not a failed
        trial."""
        if self.datasets is None:
            self.datasets = load_splits(
                self.config.data_dir, in_memory=self.config.in_memory, progress=self.progress
            )

    def __call__(self, trial: optuna.Trial) -> float:
        frozen = frozen_trial(self.study, trial.number)
        combo = self._take(trial, frozen)
        self.state.current, self.state.current_key = trial.number, combo.key
        self.state.current_epochs = 0
        retried = retried_trial(frozen)
        done = combos_by_state(self.study, grid_combos(self.grid))
        finished = len(done["COMPLETE"]) + len(done["PRUNED"])
        self.log(
            f"trial {trial.number}: {combo.key} ({finished + 1}/{grid_size(self.grid)})"
            + (f", retrying trial {retried}" if retried is not None else "")
        )
        result = self._fit(trial, combo, set(frozen.intermediate_values))
        # On Ctrl-C, current stays set, so the message can say where the search stopped.
        self.state.current = None
        trial.set_user_attr("start_epoch", int(result["start_epoch"]))
        trial.set_user_attr("epochs_done", len(result["history"]))
        auc = math.nan if result["best_val_auc"] is None else float(result["best_val_auc"])
        if not math.isfinite(auc):
            raise ValueError(
                f"trial {trial.number} ({combo.key}): validation AUC is {auc}; expected a "
                f"number (does every class of {CLASSES} appear in {self.config.data_dir}/val?)"
            )
        self.state.trained += 1
        return auc

    def _take(self, trial: optuna.Trial, frozen: FrozenTrial) -> Combo:
        """The queued combination of ``trial``, recorded as its params; raises TrialPruned
        when the trial steps aside untrained: a stray (``Study.ask`` made it fresh, as another
        worker took the last queued trial after this one looked), or a duplicate (another
        trial has its combination)."""
        queued = trial_combo(frozen)
        if queued is None:
            trial.set_user_attr(STRAY, {"trial": trial.number, "host": HOST, "pid": os.getpid()})
            self.log(f"trial {trial.number}: the queue was empty when it started; stepped aside")
            raise optuna.TrialPruned("no queued combination: another worker took the last one")
        combo = Combo.from_params(
            {f"lr_{g}": trial.suggest_categorical(f"lr_{g}", self.grid[g]) for g in LAYER_GROUPS}
        )
        if combo != queued:
            raise ValueError(
                f"trial {trial.number} was queued with {queued.key} but has the learning rates "
                f"{combo.key}; expected a trial queued with lr_{', lr_'.join(LAYER_GROUPS)}"
            )
        trial.set_user_attr("key", combo.key)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid(), "trial": trial.number})
        taken_by = holder(self.study, frozen, combo)
        if taken_by is not None:
            trial.set_user_attr("duplicate_of", {"trial": trial.number, "holder": taken_by})
            self.log(f"trial {trial.number}: {combo.key} is taken by trial {taken_by}; skipped")
            raise optuna.TrialPruned(f"combination {combo.key} is already taken by {taken_by}")
        return combo

    def _fit(self, trial: optuna.Trial, combo: Combo, reported: set[int]) -> dict[str, Any]:
        """fit, resuming; an unreadable checkpoint is moved aside and the combination restarts.

        ``reported``: steps the trial inherited from the dead trial it retries. Optuna ignores
        (and warns about) a step reported twice, which happens only after such a restart.
        """
        folder = trials_dir(self.out_dir, self.study.study_name) / combo.key
        config = dataclasses.replace(self.config, **combo.params, out_dir=str(folder))
        on_epoch_end = self._reporter(trial, combo, reported)
        try:
            share_config(config)  # under torchrun, every rank trains it with rank 0
            return fit(config, self.datasets, on_epoch_end=on_epoch_end, progress=self.progress)
        except CheckpointError as err:
            bad = quarantine(folder, err)
            warnings.warn(
                f"trial {trial.number} ({combo.key}): unreadable checkpoint ({err}); moved it "
                f"to {bad} and training this combination again from scratch",
                stacklevel=2,
            )
            trial.set_user_attr("corrupt_checkpoint", str(bad))
            share_config(config)
            return fit(config, self.datasets, on_epoch_end=on_epoch_end, progress=self.progress)

    def _reporter(self, trial: optuna.Trial, combo: Combo, reported: set[int]) -> Callable:
        started: list[int] = []

        def on_epoch_end(epoch: int, entry: dict) -> None:
            done = int(entry.get("epoch", epoch))
            if not started:
                started.append(done)
                trial.set_user_attr("start_epoch", done - 1)
            self.state.current_epochs = done
            trial.set_user_attr("epochs_done", done)
            auc = float(entry["val_auc"])
            if math.isfinite(auc) and done not in reported:
                trial.report(auc, step=done)
            if self.prune != "none" and done < self.config.epochs and trial.should_prune():
                self.log(f"trial {trial.number}: {combo.key} pruned after epoch {done} "
                         f"(AUC {auc:.4f})")  # fmt: skip
                raise optuna.TrialPruned(
                    f"{combo.key}: val AUC {auc:.4f} after epoch {done} is below the pruner's bar"
                )

        return on_epoch_end


class Worker:
    """The loop of one worker: take a queued trial, train it, publish the best, until the grid
    is done (or ``n_trials`` are trained here); wait while others train the rest."""

    def __init__(
        self,
        objective: Objective,
        heartbeat_interval: float,
        grace_period: float,
        retry: RetryCallback | None = None,
    ) -> None:
        """``retry``: the callback that queues a copy of a trial whose worker died, the one the
        study's storage was opened with (``RDBStorage.get_heartbeat_stale_trial_callback()``)."""
        self.objective = objective
        self.study = objective.study
        self.combos = grid_combos(objective.grid)
        self.log = objective.log
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.retry = retry

    @property
    def state(self) -> Progress:
        return self.objective.state

    def recover(self, include_failed: bool) -> list[str]:
        """Fail trials of dead workers (Optuna queues their retries) and queue combinations
        left without a trial; returns the keys queued."""
        for number in fail_dead_trials(self.study, self.retry, self.state.current):
            self.log(f"trial {number}: its worker is gone; queued to resume from its checkpoint")
        return requeue(self.study, self.combos, include_failed)

    def run(self, n_trials: int | None = None) -> None:
        """Train until nothing is left to train here; see the class docstring."""
        for key in self.recover(include_failed=True):
            self.log(f"{key}: queued again; it resumes from its last checkpoint")
        waited_on: set[int] = set()
        while n_trials is None or self.state.trained < n_trials:
            pending = combos_by_state(self.study, self.combos)
            if pending["WAITING"]:
                self.objective.load_data()
                self.run_trial()
            elif pending["RUNNING"]:
                self._wait_for_others(set(pending["RUNNING"]), waited_on)
            elif pending["NEW"]:
                pass  # combinations whose trials all stepped aside: recover() queues them
            else:
                if pending["FAIL"]:
                    keys = ", ".join(combo.key for combo in pending["FAIL"])
                    self.log(f"{len(pending['FAIL'])} combination(s) failed: {keys}; "
                             "re-run to retry")  # fmt: skip
                return
            self.recover(include_failed=False)
        self.log(f"trained {self.state.trained} trial(s) as asked (--n-trials); stopping")

    def run_trial(self) -> None:
        """Train the next queued trial, then publish the best model.

        ``Study.optimize`` for one trial: it fails the trials whose heartbeat is stale, takes
        the first queued trial (``Study.ask``), records its heartbeat while the objective runs,
        and tells the end: COMPLETE, PRUNED, or FAIL on an error or Ctrl-C, which it raises
        again (the checkpoint stays intact; a re-run queues the combination again).
        """
        self.study.optimize(self.objective, n_trials=1, catch=())
        publish_best(self.study, self.objective.out_dir)

    def _wait_for_others(self, running: set[Combo], waited_on: set[int]) -> None:
        trials = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trial_combo(t) in running
        ]
        # A trial is named once its worker has recorded itself (a moment after it starts; a
        # retried trial's copied record names the dead worker), so the message names the host.
        hosts = {t.number: (own_attr(t, "worker") or {}).get("host") for t in trials}
        new = {n for n, host in hosts.items() if host is not None} - waited_on
        if new:
            waited_on |= new
            who = ", ".join(f"trial {n} on {hosts[n]}" for n in sorted(new))
            self.log(
                f"waiting for {who}; a trial whose heartbeat stops for {self.grace_period} s "
                "is taken over here"
            )
        time.sleep(self.heartbeat_interval)
