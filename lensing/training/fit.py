"""Fine-tuning ResNet18 with one learning rate per layer group, resumable epoch by epoch.

``fit(config)`` trains as a ``TrainConfig`` says and writes the files ``lensing.training.
checkpoint`` describes into ``config.out_dir``. It reads as: set up (device, data, model,
optimizer, schedule) -> resume (from the rolling checkpoint) -> loop (train, validate, save).

Data-parallel training: ``torchrun --nproc_per_node=N -m lensing train ...`` runs the same
code in N processes (``lensing.core.distributed``; NCCL and ``cuda:LOCAL_RANK`` on GPUs,
gloo on the CPU). Without torchrun nothing changes. Under it:

- ``--batch-size`` is per process: a step's global batch is ``batch_size * world_size``. The
  learning rates are not rescaled; scale them yourself if you change the global batch.
- ``TrainBatches`` gives each rank a disjoint strided share of the same seeded permutation
  (``distributed.shard_epoch``); ``prepare_model`` wraps the model in
  DistributedDataParallel, which averages the gradients.
- The train loss is averaged over all ranks' images and ``images_per_s`` is the rate of the
  whole job. ``validate`` predicts a contiguous share of the split on each rank (after copying
  rank 0's BatchNorm statistics to every rank) and gathers the probabilities in split order;
  rank 0's numbers are then broadcast, so the scheduler and early stopping decide
  identically everywhere.
- Rank 0 alone reads the checkpoint to resume from (and sends it to the others), builds the
  pretrained model (the others get its weights from DDP), writes the files (the others wait at
  a barrier), prints, and calls ``on_epoch_end``; if that raises, rank 0 re-raises and the
  other ranks stop after the same epoch and return.
- The checkpoint holds every rank's RNG states, so a resume with the same number of processes
  continues exactly; with another number, the data order continues and the other ranks'
  augmentation streams are re-seeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lensing.core import distributed
from lensing.core.constants import CLASSES, LAYER_GROUPS
from lensing.core.progress import format_seconds, say
from lensing.core.rng import augment_seed, capture_rng, restore_rng, seed_everything
from lensing.core.runtime import pick_device, resolve_precision
from lensing.data.batches import TrainBatches
from lensing.data.dataset import LensingDataset
from lensing.model.checkpoint import (
    CHECKPOINT,
    Checkpointer,
    CheckpointError,
    first_line,
    read_resume_state,
)
from lensing.model.network import build_like, build_model, prepare_model
from lensing.training.config import TrainConfig
from lensing.training.optim import current_lrs, make_optimizer, make_scheduler
from lensing.training.steps import train_one_epoch, validate

__all__ = ["TrainConfig", "fit", "load_datasets"]


def _config_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    return make_scheduler(
        optimizer,
        config.schedule,
        steps,
        config.learning_rates(),
        patience=config.scheduler_patience,
        factor=config.scheduler_factor,
        warmup=config.onecycle_warmup,
    )


# ----------------------------------------------------------------------------- fit


@dataclass
class _Training:
    """The live objects of one run, built by ``_set_up`` and advanced by ``fit``'s loop."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    batches: TrainBatches
    generators: dict[str, torch.Generator]
    pretrained: bool
    weights: str  # the weights it started from: "imagenet", "lensing:<hash>", "none", a path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_auc: float | None = None
    start_epoch: int = 0

    @property
    def per_step(self) -> Any:
        """The scheduler when it is stepped after every batch (one-cycle), else None."""
        one_cycle = isinstance(self.scheduler, torch.optim.lr_scheduler.OneCycleLR)
        return self.scheduler if one_cycle else None


def fit(
    config: TrainConfig,
    datasets: dict[str, Any] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or continue training) a model as ``config`` says; see the module docstring.

    Parameters
    ----------
    config: the run's settings.
    datasets: {"train": ..., "val": ...} splits (``lensing.data.batches``); read from
        ``config.data_dir`` when None.
    on_epoch_end: called as ``on_epoch_end(epoch, entry)`` (epoch counted from 1) after that
        epoch's checkpoint is safely written; it may raise (e.g. optuna.TrialPruned) to stop
        training, and the exception propagates. In a data-parallel job it is called on rank 0
        only; if it raises, the other ranks stop after the same epoch and return normally.
    progress: progress bars (the per-epoch log lines print on rank 0 always).
    Returns
    -------
    {"history": list of per-epoch dicts, "best_val_auc": float or None, "epochs_trained": epochs
    run by this call, "start_epoch": epochs already done before it, "checkpoint": path,
    "best_checkpoint": path, "pretrained": bool, "weights": its starting weights}, alike on
    every rank.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    distributed.warn_if_alone()
    world = distributed.current()
    progress = progress and world.is_main
    device = distributed.rank_device(pick_device(config.device))
    precision = resolve_precision(config.precision, device)
    checkpointer_path = Path(config.out_dir)
    # Rank 0 reads the checkpoint and hands it to the others: one read, one version, and no
    # need for a file system shared by every machine.
    state = distributed.on_main_then_shared(
        lambda: (
            read_resume_state(config, checkpointer_path / CHECKPOINT) if config.resume else None
        )
    )
    datasets = _check_datasets(datasets, config, progress)
    run = _set_up(config, datasets, state, device)
    saver = Checkpointer(
        config.out_dir, config, run.pretrained, datasets["train"], weights=run.weights
    )
    saver.save_config()
    _log_start(config, datasets, run, device, precision)
    epochs_trained = 0
    run_start = time.perf_counter()
    for epoch in range(run.start_epoch, config.epochs):
        # The history is the same on every rank, so every rank stops at the same epoch.
        if _patience_exhausted(run.history, config.early_stopping):
            _log(f"early stopping: no better val AUC in {config.early_stopping} epochs")
            break
        entry = _train_and_validate(config, datasets, run, device, precision, epoch, progress)
        improved = run.best_val_auc is None or entry["val_auc"] > run.best_val_auc
        if improved:
            run.best_val_auc = entry["val_auc"]
            saver.save_best(run.model, run.best_val_auc, epoch + 1, run.history)
        _save_rolling(saver, run, epoch + 1, precision)
        epochs_trained += 1
        elapsed = time.perf_counter() - run_start
        _log(
            _epoch_line(
                entry, config.epochs, elapsed / epochs_trained * (config.epochs - epoch - 1)
            )
        )
        # Every rank takes part, so a callback given on rank 0 only (a search) stays in step.
        if distributed.stopped_by(on_epoch_end or _no_callback, epoch + 1, entry):
            break
    return {
        "history": run.history,
        "best_val_auc": run.best_val_auc,
        "epochs_trained": epochs_trained,
        "start_epoch": run.start_epoch,
        "checkpoint": str(saver.rolling_path),
        "best_checkpoint": str(saver.best_path),
        "pretrained": run.pretrained,
        "weights": run.weights,
    }


def _no_callback(epoch: int, entry: dict[str, Any]) -> None:
    return None


def _save_rolling(saver: Checkpointer, run: _Training, epoch: int, precision: str) -> None:
    rng_states = distributed.gather_objects(capture_rng(run.generators))
    training = {"model": run.model, "optimizer": run.optimizer}
    training |= {"scheduler": run.scheduler, "scaler": run.scaler}
    saver.save_rolling(training, epoch, run.history, run.best_val_auc, rng_states, precision)
    distributed.barrier()  # no rank runs ahead of a checkpoint that is not yet on disk


def _check_datasets(
    datasets: dict[str, Any] | None, config: TrainConfig, progress: bool
) -> dict[str, Any]:
    if datasets is None:
        with distributed.local_main_first():  # the first reader writes the data cache
            datasets = load_datasets(config, progress=progress)
    for split in ("train", "val"):
        if split not in datasets:
            raise ValueError(f"datasets lacks {split!r}; expected keys 'train' and 'val'")
    return datasets


def _set_up(
    config: TrainConfig,
    datasets: dict[str, Any],
    state: dict[str, Any] | None,
    device: torch.device,
) -> _Training:
    """Model, optimizer, batches, schedule and generators; resumed from ``state`` if given."""
    world = distributed.current()
    seed_everything(config.seed)
    generators = {
        # The same on every rank: all ranks draw the same permutation and keep their share.
        "data": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator().manual_seed(augment_seed(config.seed, world.rank)),
    }
    model, weights = _initial_model(config, state)
    model = prepare_model(model, device, config.channels_last, compile_model=config.compile)
    optimizer = make_optimizer(model, config.learning_rates(), config.weight_decay)
    batches = TrainBatches(
        datasets["train"], config.batch_size, generators["data"], device, config.num_workers
    )
    run = _Training(
        model=model,
        optimizer=optimizer,
        # A run of fewer than 2 steps (none, for --epochs 0) barely steps a one-cycle schedule.
        scheduler=_config_scheduler(optimizer, config, max(len(batches) * config.epochs, 2)),
        scaler=torch.amp.GradScaler(
            device.type, enabled=resolve_precision(config.precision, device) == "fp16"
        ),
        batches=batches,
        generators=generators,
        pretrained=weights != "none",
        weights=weights,
    )
    if state is not None:
        _resume(run, state, config)
    return run


def _initial_model(config: TrainConfig, state: dict[str, Any] | None) -> tuple[nn.Module, str]:
    """The model to start from (the checkpoint's weights, or fresh pretrained ones) and the
    name of the weights it started from ("none": random)."""
    if state is not None:
        # Resumed weights come from the checkpoint, so the ImageNet ones need not be fetched.
        model = build_like(state["model"], len(CLASSES), config.model)
        _load_part(model, state["model"], config)
        # Checkpoints from before the weights were recorded hold the flag only.
        flag = config.pretrained if state.get("pretrained") else "none"
        return model, str(state.get("weights") or flag)
    # Only rank 0 fetches or reads pretrained weights; DDP copies them to the other ranks.
    built: dict[str, nn.Module] = {}

    def build() -> str:
        built["model"] = build_model(config.pretrained, len(CLASSES), model=config.model)
        return built["model"].weights

    weights = distributed.on_main_then_shared(build)
    fresh = built.get("model") or build_model("none", len(CLASSES), model=config.model)
    return fresh, weights


def _load_part(target: Any, saved: dict[str, Any], config: TrainConfig) -> None:
    """``target.load_state_dict(saved)``, or a CheckpointError naming the checkpoint."""
    path = Path(config.out_dir) / CHECKPOINT
    try:
        target.load_state_dict(saved)
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model/optimizer: {first_line(error)}", path
        ) from error


def _resume(run: _Training, state: dict[str, Any], config: TrainConfig) -> None:
    """Put the optimizer, schedule, history and random states back as the checkpoint has them."""
    _load_part(run.optimizer, state["optimizer"], config)
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(state["scaler"])
    run.history = list(state["history"])
    run.best_val_auc = state["best_val_auc"]
    run.start_epoch = int(state["epoch"])
    remaining = len(run.batches) * (config.epochs - run.start_epoch)
    cycle = run.per_step
    if cycle is not None and remaining > 0 and cycle.last_epoch + remaining != cycle.total_steps:
        # The saved cycle does not end with this run's last epoch (continue_training asks
        # for more epochs): a new cycle over the epochs still to run, same peak rates.
        run.scheduler = _config_scheduler(run.optimizer, config, remaining)
        _log(f"one-cycle schedule: a new cycle over {remaining} steps")
    if "rng" in state:
        restore_rng(state, run.generators, config.seed, run.start_epoch)


def _train_and_validate(
    config: TrainConfig,
    datasets: dict[str, Any],
    run: _Training,
    device: torch.device,
    precision: str,
    epoch: int,
    progress: bool,
) -> dict[str, Any]:
    """One epoch of training and validation; its history entry (appended to run.history)."""
    epoch_start = time.perf_counter()
    lrs = current_lrs(run.optimizer)
    trained = train_one_epoch(
        run.model,
        nn.CrossEntropyLoss(),
        run.optimizer,
        run.batches,
        device=device,
        precision=precision,
        augment=config.augment,
        generator=run.generators["augment"],
        scaler=run.scaler,
        step_scheduler=run.per_step,
        channels_last=config.channels_last,
        progress=progress,
        description=f"epoch {epoch + 1}/{config.epochs}",
        stretch=config.stretch,
    )
    val = validate(
        run.model,
        datasets["val"],
        device=device,
        precision=precision,
        batch_size=config.eval_batch_size,
        stretch=config.stretch,
    )
    entry = {
        "epoch": epoch + 1,
        "train_loss": trained["train_loss"],
        **val,
        **{f"lr_{group}": lr for group, lr in lrs.items()},
        "images_per_s": trained["images_per_s"],
        "seconds": time.perf_counter() - epoch_start,
    }
    # Every rank computed the same numbers; rank 0's entry is taken so that the scheduler
    # and early stopping cannot diverge by a rounding difference.
    entry = distributed.broadcast_object(entry)
    if run.per_step is None:
        run.scheduler.step(entry["val_auc"])
    run.history.append(entry)
    return entry


def load_datasets(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """The train and val splits of ``config.data_dir`` (test is left alone for evaluation)."""
    return {
        split: LensingDataset(
            config.data_dir, split, in_memory=config.in_memory, progress=progress
        )
        for split in ("train", "val")
    }


def _patience_exhausted(history: list[dict[str, Any]], patience: int) -> bool:
    if patience <= 0 or not history:
        return False
    aucs = [entry["val_auc"] for entry in history]
    best_epoch = int(np.argmax(aucs))  # first epoch reaching the best, as in fit
    return len(aucs) - 1 - best_epoch >= patience


def _log_start(
    config: TrainConfig,
    datasets: dict[str, Any],
    run: _Training,
    device: torch.device,
    precision: str,
) -> None:
    world = distributed.current()
    global_batch = config.batch_size * world.world_size
    scale = f", {world.world_size} processes x batch {config.batch_size} = global batch "
    scale = scale + str(global_batch) if world.distributed else ""
    _log(
        f"training on {device} ({precision}){scale}, {len(datasets['train'])} train / "
        f"{len(datasets['val'])} val images, weights {run.weights}, epochs "
        f"{run.start_epoch + 1}..{config.epochs}"
    )


def _epoch_line(entry: dict[str, Any], epochs: int, eta_s: float) -> str:
    lrs = "/".join(f"{entry[f'lr_{g}']:.0e}" for g in LAYER_GROUPS)
    return (
        f"epoch {entry['epoch']}/{epochs}  train loss {entry['train_loss']:.4f}  "
        f"val loss {entry['val_loss']:.4f}  val AUC {entry['val_auc']:.4f}  "
        f"lr {lrs}  {entry['images_per_s']:.0f} img/s  ETA {format_seconds(eta_s)}"
    )


def _log(line: str) -> None:
    """A log line, printed by the main process only."""
    if distributed.current().is_main:
        say(line)
