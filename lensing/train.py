"""Fine-tuning ResNet18 with one learning rate per layer group, resumable epoch by epoch.

``python -m lensing train --data DIR --out DIR --epochs E [--lr-early X --lr-middle X
--lr-late X --lr-fc X] [--resume] ...`` writes into ``--out``:

- ``config.json``: the run's TrainConfig;
- ``checkpoint.pth``: rolling, rewritten atomically after every epoch; everything needed to
  continue (model, optimizer, scheduler, epoch, history, best_val_auc, config, RNG states);
- ``best_model.pth``: the weights with the best validation macro AUC so far, with the
  learning rates, classes, val AUC, epoch, history and whether ImageNet weights were used.

Both load with ``torch.load(path, weights_only=True)``. The structure keeps one place where the
model is wrapped (``prepare_model``), one where batches are produced (``TrainBatches``) and
metrics computed from gathered predictions (``validate``), which is where distributed
training would hook in.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lensing.augment import MODES as AUGMENT_MODES
from lensing.augment import augment_batch
from lensing.config import CLASSES, LAYER_GROUPS, MODELS_DIR, REAL_DATA_DIR, SIMULATED_DATA_DIR
from lensing.io import atomic_torch_save, atomic_write_json
from lensing.model import (
    PRECISIONS,
    autocast,
    build_model,
    layer_groups,
    pick_device,
    resolve_precision,
)

CHECKPOINT = "checkpoint.pth"
BEST_MODEL = "best_model.pth"
CONFIG_JSON = "config.json"
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "best_val_auc", "config")
# Config fields whose change makes a resumed run a different experiment (warned about).
_RESUME_MUST_MATCH = (
    "data_dir",
    "batch_size",
    "lr_early",
    "lr_middle",
    "lr_late",
    "lr_fc",
    "weight_decay",
    "pretrained",
    "augment",
    "seed",
    "scheduler_patience",
    "scheduler_factor",
)


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated or not one of ours."""


def default_data_dir() -> str:
    """The real set when it has been downloaded, else the simulated one."""
    return str(REAL_DATA_DIR if REAL_DATA_DIR.is_dir() else SIMULATED_DATA_DIR)


@dataclass
class TrainConfig:
    """Everything one training run depends on; saved as ``config.json`` and in checkpoints."""

    data_dir: str = field(default_factory=default_data_dir)  # train/ val/ [test/] folders
    out_dir: str = str(MODELS_DIR)  # where checkpoint.pth, best_model.pth, config.json go
    epochs: int = 10  # total number of epochs (a resumed run trains up to this number)
    batch_size: int = 64  # images per optimizer step
    lr_early: float = 1e-4  # Adam lr of conv1, bn1, layer1
    lr_middle: float = 3e-4  # Adam lr of layer2
    lr_late: float = 1e-3  # Adam lr of layer3, layer4
    lr_fc: float = 1e-3  # Adam lr of the final fully connected layer
    weight_decay: float = 0.0  # Adam L2 penalty, same for every group
    pretrained: str = "imagenet"  # "imagenet" (random init if unavailable), "none" or a PATH
    precision: str = "auto"  # "auto" (bf16 where native, fp16 on old GPUs), "fp32", "bf16"
    augment: str = "seed"  # "seed" (flip, rotate, shift, zoom), "d4" (exact symmetries), "none"
    seed: int = 0  # seeds weights init, data order and augmentation
    device: str = "auto"  # "auto" (cuda, mps, cpu), or "cpu", "cuda", "cuda:1", "mps"
    resume: bool = False  # continue from <out_dir>/checkpoint.pth when it exists
    early_stopping: int = 0  # stop after this many epochs without a better val AUC; 0 = off
    scheduler_patience: int = 2  # ReduceLROnPlateau: epochs without progress before lr drops
    scheduler_factor: float = 0.5  # ReduceLROnPlateau: lr multiplier when it drops
    num_workers: int = 2  # DataLoader workers when the data is not held in memory
    in_memory: bool = True  # hold each split as one tensor (2.7 GB for the real train set)
    eval_batch_size: int = 256  # images per forward pass in validation
    channels_last: bool = True  # NHWC memory layout (faster convolutions, needed for CPU bf16)

    def __post_init__(self) -> None:
        self.data_dir = str(self.data_dir)
        self.out_dir = str(self.out_dir)
        self.pretrained = str(self.pretrained)
        for name in ("epochs", "early_stopping", "scheduler_patience", "num_workers"):
            _require(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 0, ">= 0")
        for name in ("batch_size", "eval_batch_size"):
            _require(name, getattr(self, name), lambda v: isinstance(v, int) and v >= 1, ">= 1")
        for group, lr in self.learning_rates().items():
            _require(f"lr_{group}", lr, lambda v: _is_number(v) and 0 <= v < math.inf, ">= 0")
        _require("weight_decay", self.weight_decay, lambda v: _is_number(v) and v >= 0, ">= 0")
        _require(
            "scheduler_factor",
            self.scheduler_factor,
            lambda v: _is_number(v) and 0 < v < 1,
            "in (0, 1)",
        )
        _require("precision", self.precision, lambda v: v in PRECISIONS, f"one of {PRECISIONS}")
        _require("augment", self.augment, lambda v: v in AUGMENT_MODES, f"one of {AUGMENT_MODES}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. ``config.json``); an unknown key is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**values)

    def learning_rates(self) -> dict[str, float]:
        """{layer group: learning rate}, in LAYER_GROUPS order."""
        return {group: getattr(self, f"lr_{group}") for group in LAYER_GROUPS}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(name: str, value: Any, ok: Callable[[Any], bool], expected: str) -> None:
    if not ok(value):
        raise ValueError(f"TrainConfig.{name} = {value!r}; expected {expected}")


# ----------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path, require: Iterable[str] = ("model",)) -> dict[str, Any]:
    """A checkpoint as a dict, loaded with ``weights_only=True`` onto the CPU.

    require: keys that must be present (``TRAINING_KEYS`` for a rolling checkpoint).
    Raises CheckpointError naming the file when it is missing, truncated, foreign (not a
    dict, or not loadable without unpickling code) or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, pickled code: all different types
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {_first_line(error)}); "
            "it is truncated or not a file written by lensing.train"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}; expected a dict written by "
            "lensing.train"
        )
    missing = [key for key in require if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing}; expected a file written by lensing.train with "
            f"keys {list(require)}"
        )
    if "model" in state and not (
        isinstance(state["model"], dict)
        and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state_dict of tensors")
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from, as tensors, lists and numbers (weights_only-safe)."""
    # The legacy global NumPy state is saved because libraries may draw from it.
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
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


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- data and model


class TrainBatches:
    """Shuffled training batches ``(images (B, 1, H, W), labels (B,))`` on the device.

    With the split in memory (``dataset.images``), each epoch indexes that tensor with a
    permutation drawn from ``generator``: no DataLoader, no per-image Python. On CUDA the
    whole tensor is moved to the GPU once when it takes under a quarter of its memory, so a
    batch costs no transfer at all; otherwise batches go through pinned memory. A dataset
    without ``images`` is read by a DataLoader with ``num_workers`` processes.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        num_workers: int = 2,
    ) -> None:
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.n = len(dataset)
        self.loader = None
        images = getattr(dataset, "images", None)
        if images is not None:
            self.images, self.labels = images, torch.as_tensor(dataset.labels)
            if device.type == "cuda":
                fits = images.element_size() * images.nelement() < 0.25 * _cuda_memory(device)
                if fits:
                    self.images, self.labels = self.images.to(device), self.labels.to(device)
        else:
            self.loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=True,
                generator=generator,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0,
            )

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is not None:
            for images, labels in self.loader:
                yield self._to_device(images), labels.to(self.device, non_blocking=True)
            return
        order = torch.randperm(self.n, generator=self.generator).to(self.images.device)
        for start in range(0, self.n, self.batch_size):
            index = order[start : start + self.batch_size]
            images, labels = self.images[index], self.labels[index]
            if images.device != self.device:
                if self.device.type == "cuda":
                    images, labels = images.pin_memory(), labels.pin_memory()
                images = self._to_device(images)
                labels = labels.to(self.device, non_blocking=True)
            yield images, labels

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True)


def _cuda_memory(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).total_memory


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool = True) -> nn.Module:
    """The model on ``device`` in its memory layout: the one place where it gets wrapped."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Adam:
    """Adam with one parameter group per layer group, each with its own learning rate.

    On CPU and CUDA the fused implementation is used: one kernel for all parameters, about
    twice as fast as the per-tensor loop on this CPU.
    """
    lrs = config.learning_rates()
    groups = [
        {"params": params, "lr": lrs[name], "name": name}
        for name, params in layer_groups(model).items()
    ]
    device_type = next(model.parameters()).device.type
    fused = device_type in {"cpu", "cuda"}
    return torch.optim.Adam(groups, weight_decay=config.weight_decay, fused=fused or None)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{layer group: learning rate now}, read from the optimizer's parameter groups."""
    return {group["name"]: float(group["lr"]) for group in optimizer.param_groups}


# ----------------------------------------------------------------------------- steps


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    precision: str = "fp32",
    augment: str = "none",
    generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = True,
    progress: bool = True,
    description: str = "train",
) -> dict[str, float]:
    """One pass over ``batches`` (images (B, 1, H, W), labels (B,) on ``device``).

    Returns {"train_loss": mean cross-entropy per image, "images_per_s": training throughput,
    "images": number of images seen}.
    """
    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    seen = 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=description, leave=False, disable=not progress, unit="batch")
    for step, (images, labels) in enumerate(bar):
        images = augment_batch(images, augment, generator)
        images = images.contiguous(memory_format=memory_format)
        with autocast(device, precision):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total_loss += loss.detach().double() * len(labels)
        seen += len(labels)
        # Reading the loss forces a device sync, so the bar is refreshed only now and then.
        if progress and step % 10 == 0:
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / elapsed:.0f}")
    if seen == 0:
        raise ValueError("the training split gave no batch; expected at least one image")
    mean_loss = float(total_loss.item()) / seen
    elapsed = time.perf_counter() - start
    return {"train_loss": mean_loss, "images_per_s": seen / elapsed, "images": seen}


def validate(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 256,
) -> dict[str, float]:
    """Validation loss (mean cross-entropy), macro one-vs-rest AUC and accuracy of ``model``.

    The probabilities come from ``lensing.evaluate.predict`` for the whole split and the
    metrics from ``compute_metrics`` on them, so they are computed once from gathered
    predictions.
    """
    from lensing.evaluate import compute_metrics, predict

    probs, labels = predict(
        model, dataset, device=device, batch_size=batch_size, precision=precision
    )
    metrics = compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=0)
    picked = probs[np.arange(len(labels)), labels]
    val_loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    return {
        "val_loss": val_loss,
        "val_auc": metrics["auc_macro"],
        "val_accuracy": metrics["accuracy"],
    }


# ----------------------------------------------------------------------------- fit


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
    datasets: {"train": ..., "val": ...} LensingDatasets; read from ``config.data_dir`` when
        None.
    on_epoch_end: called as ``on_epoch_end(epoch, entry)`` (epoch counted from 1) after that
        epoch's checkpoint is safely written; it may raise (e.g. optuna.TrialPruned) to stop
        training, and the exception propagates.
    progress: progress bars and one log line per epoch; False keeps quiet.

    Returns
    -------
    {"history": list of per-epoch dicts, "best_val_auc": float or None, "epochs_trained": epochs
    run by this call, "start_epoch": epochs already done before it, "checkpoint": path,
    "best_checkpoint": path, "pretrained": bool}.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    out_dir = Path(config.out_dir)
    checkpoint_path, best_path = out_dir / CHECKPOINT, out_dir / BEST_MODEL
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)

    state = None
    if config.resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, require=TRAINING_KEYS)
        _warn_on_changed_config(state["config"], config, checkpoint_path)
    if datasets is None:
        datasets = load_datasets(config, progress=progress)
    for split in ("train", "val"):
        if split not in datasets:
            raise ValueError(f"datasets lacks {split!r}; expected keys 'train' and 'val'")

    _seed_everything(config.seed)
    generators = {
        "data": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator().manual_seed(config.seed + 1),
    }
    # Resumed weights come from the checkpoint, so the ImageNet ones need not be fetched.
    model = build_model("none" if state else config.pretrained, num_classes=len(CLASSES))
    pretrained = bool(state.get("pretrained", False)) if state else model.is_pretrained
    model = prepare_model(model, device, config.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.scheduler_factor, patience=config.scheduler_patience
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: list[dict[str, Any]] = []
    best_val_auc: float | None = None
    start_epoch = 0
    if state is not None:
        try:
            getattr(model, "module", model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {checkpoint_path} does not fit this model/optimizer: "
                f"{_first_line(error)}"
            ) from error
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            _set_rng_state(state["rng"], generators)
        history = list(state["history"])
        best_val_auc = state["best_val_auc"]
        start_epoch = int(state["epoch"])
    atomic_write_json(out_dir / CONFIG_JSON, asdict(config))

    batches = TrainBatches(
        datasets["train"], config.batch_size, generators["data"], device, config.num_workers
    )
    criterion = nn.CrossEntropyLoss()
    _log(
        progress,
        f"training on {device} ({precision}), {len(datasets['train'])} train / "
        f"{len(datasets['val'])} val images, pretrained={pretrained}, epochs "
        f"{start_epoch + 1}..{config.epochs}",
    )
    run_start = time.perf_counter()
    epochs_trained = 0
    for epoch in range(start_epoch, config.epochs):
        if _patience_exhausted(history, config.early_stopping):
            _log(progress, f"early stopping: no better val AUC in {config.early_stopping} epochs")
            break
        epoch_start = time.perf_counter()
        lrs = current_lrs(optimizer)
        trained = train_one_epoch(
            model,
            criterion,
            optimizer,
            batches,
            device=device,
            precision=precision,
            augment=config.augment,
            generator=generators["augment"],
            scaler=scaler,
            channels_last=config.channels_last,
            progress=progress,
            description=f"epoch {epoch + 1}/{config.epochs}",
        )
        val = validate(
            model,
            datasets["val"],
            device=device,
            precision=precision,
            batch_size=config.eval_batch_size,
        )
        scheduler.step(val["val_auc"])
        entry = {
            "epoch": epoch + 1,
            "train_loss": trained["train_loss"],
            **val,
            **{f"lr_{group}": lr for group, lr in lrs.items()},
            "images_per_s": trained["images_per_s"],
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(entry)
        if best_val_auc is None or val["val_auc"] > best_val_auc:
            best_val_auc = val["val_auc"]
            # Written before the rolling checkpoint: a crash in between re-runs this epoch,
            # which rewrites the best model, instead of losing it.
            atomic_torch_save(
                {
                    "model": _cpu_state_dict(model),
                    "config": asdict(config),
                    "params": config.learning_rates(),
                    "classes": list(CLASSES),
                    "val_auc": best_val_auc,
                    "epoch": epoch + 1,
                    "history": history,
                    "pretrained": pretrained,
                },
                best_path,
            )
        checkpoint = {
            "model": _cpu_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "best_val_auc": best_val_auc,
            "config": asdict(config),
            "rng": _rng_state(generators),
            "pretrained": pretrained,
            "classes": list(CLASSES),
            "precision": precision,
        }
        if scaler.is_enabled():
            checkpoint["scaler"] = scaler.state_dict()
        atomic_torch_save(checkpoint, checkpoint_path)
        epochs_trained += 1
        elapsed = time.perf_counter() - run_start
        eta = elapsed / epochs_trained * (config.epochs - epoch - 1)
        _log(progress, _epoch_line(entry, config.epochs, eta))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, entry)
    return {
        "history": history,
        "best_val_auc": best_val_auc,
        "epochs_trained": epochs_trained,
        "start_epoch": start_epoch,
        "checkpoint": str(checkpoint_path),
        "best_checkpoint": str(best_path),
        "pretrained": pretrained,
    }


def load_datasets(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """The train and val splits of ``config.data_dir`` (test is left alone for evaluation)."""
    from lensing.data import LensingDataset

    return {
        split: LensingDataset(
            config.data_dir, split, in_memory=config.in_memory, progress=progress
        )
        for split in ("train", "val")
    }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state, for code that still uses it)
    torch.manual_seed(seed)


def _patience_exhausted(history: list[dict[str, Any]], patience: int) -> bool:
    if patience <= 0 or not history:
        return False
    aucs = [entry["val_auc"] for entry in history]
    best_epoch = int(np.argmax(aucs))  # first epoch reaching the best, as in fit
    return len(aucs) - 1 - best_epoch >= patience


def _warn_on_changed_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = asdict(config)
    changed = {k: (saved.get(k), now[k]) for k in _RESUME_MUST_MATCH if saved.get(k) != now[k]}
    if changed:
        text = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        warnings.warn(
            f"resuming {path} with a different config ({text}); the run mixes two settings",
            RuntimeWarning,
            stacklevel=3,
        )


def _epoch_line(entry: dict[str, Any], epochs: int, eta_s: float) -> str:
    lrs = "/".join(f"{entry[f'lr_{g}']:.0e}" for g in LAYER_GROUPS)
    return (
        f"epoch {entry['epoch']}/{epochs}  train loss {entry['train_loss']:.4f}  "
        f"val loss {entry['val_loss']:.4f}  val AUC {entry['val_auc']:.4f}  "
        f"lr {lrs}  {entry['images_per_s']:.0f} img/s  ETA {_format_seconds(eta_s)}"
    )


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _log(progress: bool, line: str) -> None:
    if progress:
        tqdm.write(line)


# ----------------------------------------------------------------------------- command line


def get_args_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog="python -m lensing train",
        description="Fine-tune ResNet18 with one learning rate per layer group. Writes "
        "OUT/checkpoint.pth (rolling), OUT/best_model.pth (best val AUC) and OUT/config.json.",
    )

    def default(name: str) -> Any:
        f = defaults[name]
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    parser.add_argument("--data", default=default("data_dir"), help="data folder (%(default)s)")
    parser.add_argument("--out", default=default("out_dir"), help="output folder (%(default)s)")
    parser.add_argument(
        "--epochs", type=int, default=default("epochs"), help="total epochs (%(default)s)"
    )
    for group in LAYER_GROUPS:
        parser.add_argument(
            f"--lr-{group}",
            type=float,
            default=default(f"lr_{group}"),
            help=f"Adam learning rate of the {group} layers (%(default)s)",
        )
    parser.add_argument(
        "--batch-size", type=int, default=default("batch_size"), help="(%(default)s)"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=default("weight_decay"), help="(%(default)s)"
    )
    parser.add_argument(
        "--pretrained",
        default=default("pretrained"),
        help="imagenet, none or PATH to a weights file (%(default)s)",
    )
    parser.add_argument(
        "--precision",
        default=default("precision"),
        choices=PRECISIONS,
        help="auto: bf16 on CPUs with native bf16 and on GPUs, else fp32 (%(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=default("seed"), help="init, order, augmentation (%(default)s)"
    )
    parser.add_argument(
        "--augment",
        default=default("augment"),
        choices=AUGMENT_MODES,
        help="seed: flip, rotate, shift, zoom; d4: flips and 90-degree turns (%(default)s)",
    )
    parser.add_argument(
        "--early-stopping",
        type=int,
        default=default("early_stopping"),
        metavar="N",
        help="stop after N epochs without a better val AUC; 0 = off (%(default)s)",
    )
    parser.add_argument(
        "--device", default=default("device"), help="auto, cpu, cuda[:N], mps (%(default)s)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=default("num_workers"),
        help="DataLoader workers, used only when the data is not in memory (%(default)s)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoint.pth if present"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or log")
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = TrainConfig(
            data_dir=args.data,
            out_dir=args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            **{f"lr_{group}": getattr(args, f"lr_{group}") for group in LAYER_GROUPS},
            weight_decay=args.weight_decay,
            pretrained=args.pretrained,
            precision=args.precision,
            augment=args.augment,
            seed=args.seed,
            device=args.device,
            resume=args.resume,
            early_stopping=args.early_stopping,
            num_workers=args.num_workers,
        )
        result = fit(config, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = result["best_val_auc"]
    print(
        f"best val AUC {best:.4f}" if best is not None else "no epoch trained",
        f"(pretrained={result['pretrained']}); "
        f"best model {result['best_checkpoint']}, checkpoint {result['checkpoint']}",
    )
    return 0
