"""One worker of a search: it takes queued combinations one at a time and trains each.

Each combination trains with :func:`lensing.training.fit.fit` in ``<out>/trials/<study>/<key>/``,
which keeps a rolling checkpoint every epoch, and reports its validation AUC after every epoch
(``trial.report``), so a pruner can stop a lagging one. A retried trial has the same learning
rates, so it lands in the same folder and resumes from the last finished epoch. While a trial
runs, a thread records its heartbeat, by which other workers tell it is alive.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.data.dataset import load_splits
from lensing.model.checkpoint import CheckpointError
from lensing.search.grid import Combo, grid_combos, grid_size
from lensing.search.publish import publish_best, trials_dir
from lensing.search.queueing import holder
from lensing.search.ranks import share_config
from lensing.search.recovery import HOST, fail_dead_trials, quarantine, requeue
from lensing.search.study import combos_by_state, trial_combo
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
    validation AUC, or raises ``optuna.TrialPruned`` (pruned, or stepped aside)."""

    study: optuna.Study
    grid: dict[str, list[float]]
    data_dir: Path
    out_dir: Path
    epochs: int
    base_config: dict[str, Any]
    prune: str
    log: Callable[[str], None]
    progress: bool = True  # progress bars
    datasets: dict | None = None
    state: Progress = dataclasses.field(default_factory=Progress)

    def load_data(self) -> None:
        """Read the data once per process, outside any trial: a data problem is not a failed
        trial."""
        if self.datasets is None:
            in_memory = self.base_config.get("in_memory", True)
            self.datasets = load_splits(self.data_dir, in_memory=in_memory, progress=self.progress)

    def __call__(self, trial: optuna.Trial) -> float:
        frozen = self.study._storage.get_trial(trial._trial_id)
        queued = trial_combo(frozen)
        if queued is None:
            raise ValueError(
                f"trial {trial.number} has no learning rates; expected a trial queued with "
                f"lr_{', lr_'.join(LAYER_GROUPS)}"
            )
        combo = Combo.from_params(
            {f"lr_{g}": trial.suggest_categorical(f"lr_{g}", self.grid[g]) for g in LAYER_GROUPS}
        )
        trial.set_user_attr("key", combo.key)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid(), "trial": trial.number})
        taken_by = holder(self.study, frozen, combo)
        if taken_by is not None:
            trial.set_user_attr("duplicate_of", {"trial": trial.number, "holder": taken_by})
            self.log(f"trial {trial.number}: {combo.key} is taken by trial {taken_by}; skipped")
            raise optuna.TrialPruned(f"combination {combo.key} is already taken by {taken_by}")
        self.state.current, self.state.current_key = trial.number, combo.key
        self.state.current_epochs = 0
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
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
                f"number (does every class of {CLASSES} appear in {self.data_dir}/val?)"
            )
        self.state.trained += 1
        return auc

    def _fit(self, trial: optuna.Trial, combo: Combo, reported: set[int]) -> dict[str, Any]:
        """fit, resuming; an unreadable checkpoint is moved aside and the combination restarts.

        ``reported``: steps the trial inherited from the dead trial it retries. Optuna ignores
        (and warns about) a step reported twice, which happens only after such a restart.
        """
        folder = trials_dir(self.out_dir, self.study.study_name) / combo.key
        fields = {"data_dir": str(self.data_dir), "out_dir": str(folder), "resume": True}
        fields["epochs"] = self.epochs
        config = TrainConfig.from_dict(self.base_config | combo.params | fields)
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
            if self.prune != "none" and done < self.epochs and trial.should_prune():
                self.log(f"trial {trial.number}: {combo.key} pruned after epoch {done} "
                         f"(AUC {auc:.4f})")  # fmt: skip
                raise optuna.TrialPruned(
                    f"{combo.key}: val AUC {auc:.4f} after epoch {done} is below the pruner's bar"
                )

        return on_epoch_end


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds, in a thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def _beat(self) -> None:
        while True:
            self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """The loop of one worker: take a queued trial, train it, publish the best, until the grid
    is done (or ``n_trials`` are trained here); wait while others train the rest."""

    def __init__(
        self,
        objective: Objective,
        heartbeat_interval: float,
        grace_period: float,
    ) -> None:
        self.objective = objective
        self.study = objective.study
        self.combos = grid_combos(objective.grid)
        self.log = objective.log
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    @property
    def state(self) -> Progress:
        return self.objective.state

    def recover(self, include_failed: bool) -> list[str]:
        """Fail trials of dead workers (Optuna queues their retries) and queue combinations
        left without a trial; returns the keys queued."""
        for number in fail_dead_trials(self.study, self.state.current):
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
                trial_id = self.pop()
                if trial_id is None:
                    time.sleep(0.2)  # another worker took it as we reached for it
                else:
                    self.run_trial(trial_id)
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

    def pop(self) -> int | None:
        """Take a queued trial of this grid (WAITING -> RUNNING, which one worker only wins);
        returns its id, or None when the queue emptied meanwhile."""
        storage = self.study._storage
        mine = set(self.combos)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if trial_combo(trial) not in mine:
                continue
            try:
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except UpdateFinishedTrialError:
                continue  # finished meanwhile by whoever took it
        return None

    def run_trial(self, trial_id: int) -> None:
        """Run the objective on a taken trial and tell Optuna how it ended."""
        trial = optuna.Trial(self.study, trial_id)
        with _Heartbeat(self.study._storage, trial_id, self.heartbeat_interval):
            try:
                value = self.objective(trial)
            except optuna.TrialPruned:
                self.study.tell(trial, state=TrialState.PRUNED)
            except BaseException:
                # Ctrl-C or an error: the trial fails with its checkpoint intact; a re-run
                # queues it again.
                self.study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                self.study.tell(trial, value)
        publish_best(self.study, self.objective.out_dir)

    def _wait_for_others(self, running: set[Combo], waited_on: set[int]) -> None:
        trials = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trial_combo(t) in running
        ]
        if {t.number for t in trials} - waited_on:
            waited_on |= {t.number for t in trials}
            who = ", ".join(
                f"trial {t.number} on {(t.user_attrs.get('worker') or {}).get('host')}"
                for t in trials
            )
            self.log(
                f"waiting for {who}; a trial whose heartbeat stops for {self.grace_period} s "
                "is taken over here"
            )
        time.sleep(self.heartbeat_interval)
