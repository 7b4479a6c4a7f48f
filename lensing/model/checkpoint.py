"""Checkpoints: their file names, their two formats, loading them safely, and resuming from them.

A training run writes into its folder:

- ``checkpoint.pth`` (rolling, rewritten after every epoch): model, optimizer, scheduler,
  epoch (finished epochs), history (one dict per epoch), best_val_auc, config, and every RNG
  state, so a resumed run continues exactly where the last finished epoch left it;
- ``best_model.pth``: the weights with the best validation macro AUC, with the learning rates
  (``params``), classes, val AUC, epoch, history, whether pretrained weights were used
  (``pretrained``) and which (``weights``: "imagenet", "lensing:<hash>", "none", a path);
- in both, ``training_profile``: the distribution of a few per-image statistics of the train
  split (:func:`lensing.data.ood.training_profile`), against which ``predict`` and
  ``evaluate`` flag inputs that do not look like the training images; computed once per run,
  when the first of these files is written;
- ``config.json``: the run's TrainConfig.

Every file is written atomically and loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lensing.core import distributed
from lensing.core.atomic import (
    atomic_torch_save,
    atomic_write_json,
    remove_stale_temporaries,
    temporary_pattern,
)
from lensing.core.constants import CLASSES, canonical_augmentation
from lensing.core.runtime import cpu_state_dict
from lensing.data.ood import PROFILE_KEY, training_profile

CHECKPOINT = "checkpoint.pth"  # the rolling checkpoint of a run folder
BEST_MODEL = "best_model.pth"  # the best weights of a run folder (and of a search's out folder)
CONFIG_JSON = "config.json"  # the run's TrainConfig
BEST_PARAMS = "best_params.json"  # the search's best learning rates and val AUC
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "best_val_auc", "config")
# Config fields whose change makes a resumed run a different experiment (warned about).
RESUME_MUST_MATCH = (
    "data_dir",
    "batch_size",
    "lr_early",
    "lr_middle",
    "lr_late",
    "lr_fc",
    "weight_decay",
    "pretrained",
    "augment",
    "stretch",
    "seed",
    "scheduler_patience",
    "scheduler_factor",
    "onecycle_warmup",
)


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, not one of ours, or unfit to resume."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


def load_checkpoint(path: str | Path, require: Iterable[str] = ("model",)) -> dict[str, Any]:
    """A checkpoint as a dict, loaded with ``weights_only=True`` onto the CPU.

    require: keys that must be present (``TRAINING_KEYS`` for a rolling checkpoint).
    Raises CheckpointError naming the file when it is missing, truncated, foreign (not a
    dict, or not loadable without unpickling code) or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, pickled code: all different types
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {first_line(error)}); "
            "it is truncated or not a file written by lensing.training.fit",
            path,
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}; expected a dict written by "
            "lensing.training.fit",
            path,
        )
    missing = [key for key in require if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing}; expected a file written by lensing.training.fit "
            "with "
            f"keys {list(require)}",
            path,
        )
    if "model" in state and not (
        isinstance(state["model"], dict)
        and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state_dict of tensors", path)
    return state


def first_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


# ----------------------------------------------------------------------------- resuming


def read_resume_state(config: Any, path: Path) -> dict[str, Any] | None:
    """The rolling checkpoint at ``path`` checked against ``config`` (a TrainConfig), or None
    when there is none.

    A different schedule is an error (the saved scheduler state cannot drive another one);
    other changed settings and another number of processes are warned about.
    """
    if not path.exists():
        return None
    state = load_checkpoint(path, require=TRAINING_KEYS)
    saved_schedule = state["config"].get("schedule", "plateau")  # older checkpoints: plateau
    if saved_schedule != config.schedule:
        raise CheckpointError(
            f"checkpoint {path} was trained with schedule {saved_schedule!r}; this run asks "
            f"for {config.schedule!r}. Resume with --schedule {saved_schedule} or train into "
            "another folder",
            path,
        )
    _warn_on_changed_config(state["config"], config, path)
    world_size = distributed.current().world_size
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        warnings.warn(
            f"resuming {path} with {world_size} process(es); it was written by {saved}: the "
            f"global batch changes from {saved * config.batch_size} to "
            f"{world_size * config.batch_size} images and the augmentation draws differ",
            RuntimeWarning,
            stacklevel=3,
        )
    return state


def _warn_on_changed_config(saved: dict[str, Any], config: Any, path: Path) -> None:
    now = dataclasses.asdict(config)
    # A field the saved config lacks did not exist then: the run had what is now its default.
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    saved = {key: saved.get(key, defaults.get(key)) for key in RESUME_MUST_MATCH}
    saved["augment"] = canonical_augmentation(saved["augment"])
    changed = {k: (saved.get(k), now[k]) for k in RESUME_MUST_MATCH if saved.get(k) != now[k]}
    if changed:
        text = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        warnings.warn(
            f"resuming {path} with a different config ({text}); the run mixes two settings",
            RuntimeWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- writing


class Checkpointer:
    """Writes one run folder's files: ``config.json``, the best model and the rolling checkpoint.

    Only the main process writes (under torchrun the others call it too and it does nothing),
    so ``fit`` needs no rank test around it. The best model is written before the rolling
    checkpoint of the same epoch: a crash in between re-runs that epoch, which rewrites the
    best model, instead of losing it.

    ``train``: the train split (any form ``lensing.data.batches`` takes); its profile
    (``training_profile``) goes into every file written. None: no profile (``predict`` then
    says it cannot check its inputs).
    """

    def __init__(
        self,
        out_dir: str | Path,
        config: Any,
        pretrained: bool,
        train: Any = None,
        *,
        weights: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.rolling_path = self.out_dir / CHECKPOINT
        self.best_path = self.out_dir / BEST_MODEL
        self.config = config
        self.pretrained = pretrained
        # The weights the run started from ("imagenet", "lensing:<hash>", "none", a path).
        self.weights = weights if weights is not None else ("none" if not pretrained else None)
        self.writes = distributed.current().is_main
        self.train = train
        self._profile: dict[str, Any] | None = None
        if self.writes:  # a killed write leaves its temporary file: harmless, then removed
            for path in (self.rolling_path, self.best_path):
                remove_stale_temporaries(self.out_dir, temporary_pattern(path))

    def profile(self) -> dict[str, Any]:
        """{PROFILE_KEY: the train split's profile}, computed on first use; {} without one."""
        if self.train is None:
            return {}
        if self._profile is None:
            self._profile = training_profile(self.train)
        return {PROFILE_KEY: self._profile}

    def save_config(self) -> None:
        if self.writes:
            atomic_write_json(self.out_dir / CONFIG_JSON, dataclasses.asdict(self.config))

    def save_best(
        self, model: nn.Module, val_auc: float, epoch: int, history: list[dict[str, Any]]
    ) -> None:
        """The weights of ``epoch`` (counted from 1) as the best model so far."""
        if not self.writes:
            return
        record = {
            "model": cpu_state_dict(model),
            "config": dataclasses.asdict(self.config),
            "params": self.config.learning_rates(),
            "classes": list(CLASSES),
            "val_auc": val_auc,
            "epoch": epoch,
            "history": history,
            "pretrained": self.pretrained,
            "weights": self.weights,
            **self.profile(),
        }
        atomic_torch_save(record, self.best_path)

    def save_rolling(
        self,
        training: dict[str, Any],
        epoch: int,
        history: list[dict[str, Any]],
        best_val_auc: float | None,
        rng_states: list[dict[str, Any]],
        precision: str,
    ) -> None:
        """Everything needed to resume after ``epoch``.

        training: {"model", "optimizer", "scheduler", "scaler"} of the run.
        rng_states: every rank's ``lensing.core.rng.capture_rng`` (rank 0 first).
        """
        if not self.writes:
            return
        world_size = len(rng_states)
        record = {
            "model": cpu_state_dict(training["model"]),
            "optimizer": training["optimizer"].state_dict(),
            "scheduler": training["scheduler"].state_dict(),
            "epoch": epoch,
            "history": history,
            "best_val_auc": best_val_auc,
            "config": dataclasses.asdict(self.config),
            "rng": rng_states[0],
            "pretrained": self.pretrained,
            "weights": self.weights,
            "classes": list(CLASSES),
            "precision": precision,
            "world_size": world_size,
            **self.profile(),
        }
        if world_size > 1:
            record["rng_per_rank"] = rng_states
        scaler = training.get("scaler")
        if scaler is not None and scaler.is_enabled():
            record["scaler"] = scaler.state_dict()
        atomic_torch_save(record, self.rolling_path)
