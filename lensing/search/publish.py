"""The search's result: the best trial's weights and learning rates, and training them longer.

:func:`publish_best` copies the best finished trial's ``best_model.pth`` to
``<out>/best_model.pth`` and writes ``<out>/best_params.json``; :func:`continue_training`
trains that combination more epochs from its rolling checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lensing.core.atomic import atomic_torch_save, atomic_write_json
from lensing.core.constants import CLASSES, MODELS_DIR
from lensing.model.checkpoint import BEST_MODEL, BEST_PARAMS, CHECKPOINT, load_checkpoint
from lensing.search.grid import Combo
from lensing.search.study import stepped_aside
from lensing.training.fit import TrainConfig, fit


def trials_dir(out_dir: str | Path, study_name: str) -> Path:
    """The folder holding one folder per combination of a study: ``<out>/trials/<study>``."""
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
        if t.value is not None and not stepped_aside(t)
    ]
    if not completed:
        return None
    best = max(completed, key=lambda t: (t.value, -t.number))
    key = Combo.from_params(best.params).key
    folder = trials_dir(out_dir, study.study_name) / key
    source = folder / BEST_MODEL
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
        previous = json.loads((out_dir / BEST_PARAMS).read_text())
    except (OSError, ValueError):
        previous = None
    same = (
        isinstance(previous, dict)
        and previous.get("study") == study.study_name
        and previous.get("trial_key") == key
        and previous.get("source_mtime_ns") == source.stat().st_mtime_ns
        and (out_dir / BEST_MODEL).is_file()
    )
    if same:
        return previous
    return _publish_from(folder, out_dir, study.study_name, best.number, key)


def _publish_from(folder: Path, out_dir: Path, study_name: str, number: int, key: str) -> dict:
    source = folder / BEST_MODEL
    mtime = source.stat().st_mtime_ns
    best = load_checkpoint(source)
    history = best.get("history") or []
    rolling = folder / CHECKPOINT
    if rolling.is_file():
        # The rolling checkpoint carries the whole learning curve, past the best epoch too.
        history = load_checkpoint(rolling).get("history", history)
    rates = Combo.from_params(best["params"]).rates
    best |= {
        "params": rates,
        "classes": list(best.get("classes", CLASSES)),
        "history": history,
        "trial": number,
        "trial_key": key,
        "study": study_name,
    }
    atomic_torch_save(best, out_dir / BEST_MODEL)
    summary = rates | {
        "val_auc": float(best["val_auc"]),
        "trial": number,
        "trial_key": key,
        "study": study_name,
        "epochs": len(history),
        "best_epoch": best.get("epoch"),
        "pretrained": best.get("pretrained"),
        "weights": best.get("weights"),
        "source_mtime_ns": mtime,
    }
    atomic_write_json(out_dir / BEST_PARAMS, summary)
    return summary


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
    progress : progress bars (the per-epoch lines are printed always).

    Returns {"trial_key", "before" (val AUC), "after", "improved" (bool), "epochs_trained",
    "epochs_total"}.
    """
    out_dir = Path(out_dir)
    if type(additional_epochs) is not int or additional_epochs < 1:
        raise ValueError(f"additional_epochs {additional_epochs!r}; expected a whole number >= 1")
    params_path = out_dir / BEST_PARAMS
    if not params_path.is_file():
        raise FileNotFoundError(f"no {params_path}: run the search first")
    best = json.loads(params_path.read_text())
    folder = trials_dir(out_dir, best["study"]) / best["trial_key"]
    rolling = load_checkpoint(folder / CHECKPOINT)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    trained = TrainConfig.from_dict({k: v for k, v in rolling["config"].items() if k in known})
    done = int(rolling["epoch"])
    config = dataclasses.replace(
        trained,
        epochs=done + additional_epochs,
        resume=True,
        out_dir=str(folder),
        data_dir=trained.data_dir if data_dir is None else str(data_dir),
    )
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
