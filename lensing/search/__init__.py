"""Resumable grid search over the four layer groups' learning rates (Optuna on RDB storage).

Every combination of the grid is one Optuna trial, queued once, trained by
:func:`lensing.training.fit.fit` and scored by its best validation macro AUC. The study lives in an
SQLAlchemy database (``sqlite:///<out>/grid_search.db`` by default), so the search survives
anything that stops the process:

- Finished combinations are never trained again: a re-run skips them, and a finished grid
  trains nothing at all.
- Each combination trains in its own folder, ``<out>/trials/<study>/<key>/``, named by its
  learning rates (``early=1e-05_middle=0.0001_late=0.0001_fc=0.001``), where fit keeps a
  rolling checkpoint every epoch. A retried trial is a new Optuna trial with the same learning
  rates, so it lands in the same folder and resumes from the last finished epoch: a kill costs
  at most the epoch in progress.
- A trial that dies without a word (SIGKILL, power loss, a restarted kernel) stays RUNNING in
  the database. Workers record a heartbeat; one whose heartbeat is older than ``grace_period``
  seconds is failed and re-queued. A dead worker on this same machine is recognised at once by
  its process id, so a restarted single worker resumes without waiting for the grace period.
- Ctrl-C fails the running trial with its checkpoint intact; the next run re-queues it.
- Several workers (processes, machines) started with the same ``--storage`` share one grid:
  each takes queued combinations one at a time, and each combination is trained by one only.

The search uses Optuna's public API: each trial runs in ``Study.optimize`` (which takes the
queued trial, beats its heartbeat and tells its end), dead workers' trials are failed with
``Study.tell`` and retried by ``RetryHeartbeatStaleTrialCallback``. The few trial attributes
Optuna writes for itself and offers no API for are read in ``optuna_attrs`` alone.

The modules: ``grid`` (the grid file and :class:`Combo`), ``storage`` (the database),
``queueing`` (opening a study, its queue), ``study`` (reading it: :func:`results_table`),
``optuna_attrs`` (Optuna's own trial attributes), ``recovery`` (dead workers, corrupt
checkpoints), ``worker`` (the objective and the loop), ``publish`` (the best model,
:func:`continue_training`), ``driver`` (:func:`run_search`), ``dashboard`` (optuna-dashboard
over the study).
``python -m lensing search`` is parsed in ``lensing.cli.search``.
"""

from lensing.search.driver import DEFAULT_EPOCHS, run_search
from lensing.search.grid import (
    DEFAULT_GRID,
    Combo,
    grid_combos,
    grid_size,
    load_grid,
    search_space,
    trial_key,
    validate_grid,
)
from lensing.search.publish import continue_training, publish_best, trials_dir
from lensing.search.queueing import SearchError, check_study, make_pruner, open_study
from lensing.search.recovery import fail_dead_trials, quarantine, requeue
from lensing.search.storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    MAX_RETRY,
    default_storage,
    open_storage,
    redact,
)
from lensing.search.study import (
    DEFAULT_STUDY,
    STATES,
    format_table,
    results_table,
    study_table,
    trial_combo,
)
from lensing.search.worker import Objective, Worker

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_GRID",
    "DEFAULT_STUDY",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "MAX_RETRY",
    "STATES",
    "Combo",
    "Objective",
    "SearchError",
    "Worker",
    "check_study",
    "continue_training",
    "default_storage",
    "fail_dead_trials",
    "format_table",
    "grid_combos",
    "grid_size",
    "load_grid",
    "make_pruner",
    "open_storage",
    "open_study",
    "publish_best",
    "quarantine",
    "redact",
    "requeue",
    "results_table",
    "run_search",
    "search_space",
    "study_table",
    "trial_combo",
    "trial_key",
    "trials_dir",
    "validate_grid",
]
