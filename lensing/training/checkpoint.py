"""Checkpoints: their file names, their two formats, loading them safely, and resuming from them.

A training run writes into its folder:

- ``checkpoint.pth`` (rolling, rewritten after every epoch): model, optimizer, scheduler,
  epoch (finished epochs), history (one dict per epoch), best_val_auc, config, and every RNG
  state, so a resumed run continues exactly where the last finished epoch left it;
- ``best_model.pth``: the weights with the best validation macro AUC, with the learning rates
  (``params``), classes, val AUC, epoch, history and whether ImageNet weights were used;
- ``config.json``: the run's TrainConfig.

Every file is written atomically and loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lensing.atomic import atomic_torch_save, atomic_write_json
from lensing.constants import CLASSES, canonical_augmentation
from lensing.runtime import cpu_state_dict
from lensing.training import distributed

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


# ----------------------------------------------------------------------------- random states


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from, as tensors, lists and numbers (weights_only-safe)."""
    # The legacy global NumPy state is saved because libraries may draw from it.
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": _cuda_rng_states(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what ``capture_rng`` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        world = distributed.current()
        if world.distributed:
            cuda = state["cuda"]
            torch.cuda.set_rng_state(cuda[world.local_rank] if len(cuda) > 1 else cuda[0])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def _cuda_rng_states() -> list[torch.Tensor]:
    if not torch.cuda.is_available():
        return []
    # One rank per GPU: touching the other GPUs would open a context on each of them.
    if distributed.current().distributed:
        return [torch.cuda.get_rng_state()]
    return torch.cuda.get_rng_state_all()


def augment_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of a rank's augmentation generator; rank 0 of a fresh run keeps ``seed + 1``.

    Each rank draws its own augmentations: the same stream on every rank would give the
    images at one batch position the same rotation and shift on every rank.
    """
    if rank == 0 and epoch == 0:
        return seed + 1
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def restore_rng(
    state: dict[str, Any], generators: dict[str, torch.Generator], seed: int, epoch: int
) -> None:
    """Each rank's own RNG states when the world size is unchanged; else rank 0's.

    Rank 0's states carry the data order, which every rank shares; the other ranks'
    augmentation generators are then seeded afresh from (seed, rank, epoch).
    """
    world = distributed.current()
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == world.world_size:
        set_rng(per_rank[world.rank], generators)
        return
    set_rng(state["rng"], generators)
    if world.rank > 0:
        generators["augment"].manual_seed(augment_seed(seed, world.rank, epoch))


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
    """

    def __init__(self, out_dir: str | Path, config: Any, pretrained: bool) -> None:
        self.out_dir = Path(out_dir)
        self.rolling_path = self.out_dir / CHECKPOINT
        self.best_path = self.out_dir / BEST_MODEL
        self.config = config
        self.pretrained = pretrained
        self.writes = distributed.current().is_main

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
        rng_states: every rank's ``capture_rng`` (rank 0 first).
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
            "classes": list(CLASSES),
            "precision": precision,
            "world_size": world_size,
        }
        if world_size > 1:
            record["rng_per_rank"] = rng_states
        scaler = training.get("scaler")
        if scaler is not None and scaler.is_enabled():
            record["scaler"] = scaler.state_dict()
        atomic_torch_save(record, self.rolling_path)
