"""Fine-tuning ResNet18 with one learning rate per layer group, resumable epoch by epoch.

``python -m lensing train --data DIR --out DIR --epochs E [--lr-early X --lr-middle X
--lr-late X --lr-fc X] [--resume] ...`` writes into ``--out``:

- ``config.json``: the run's TrainConfig;
- ``checkpoint.pth``: rolling, rewritten atomically after every epoch; everything needed to
  continue (model, optimizer, scheduler, epoch, history, best_val_auc, config, RNG states);
- ``best_model.pth``: the weights with the best validation macro AUC so far, with the
  learning rates, classes, val AUC, epoch, history and whether ImageNet weights were used.

Both load with ``torch.load(path, weights_only=True)``.

Data-parallel training: ``torchrun --nproc_per_node=N -m lensing train ...`` runs the same
code in N processes (``lensing.distributed``; NCCL and ``cuda:LOCAL_RANK`` on GPUs, gloo on
the CPU). Without torchrun nothing changes. Under it:

- ``--batch-size`` is per process: a step's global batch is ``batch_size * world_size``. The
  learning rates are not rescaled; scale them yourself if you change the global batch.
- ``TrainBatches`` gives each rank a disjoint strided share of the same seeded permutation,
  padded by wrap-around so every rank takes the same number of steps
  (``distributed.shard_epoch``); ``prepare_model`` wraps the model in
  DistributedDataParallel, which averages the gradients.
- The train loss is averaged over all ranks' images and ``images_per_s`` is the rate of the
  whole job. ``validate`` predicts a contiguous share of the split on each rank (after copying
  rank 0's BatchNorm statistics to every rank), gathers the probabilities in split order, and
  every rank computes the same AUC from the whole split; rank 0's numbers are then
  broadcast, so the scheduler and early stopping decide identically everywhere.
- Rank 0 alone reads the checkpoint to resume from (and sends it to the others), builds the
  pretrained model (the others get its weights from DDP), writes ``config.json`` and the
  checkpoints (the others wait at a barrier), prints, and calls ``on_epoch_end``; if that
  raises, rank 0 re-raises and the other ranks stop after the same epoch and return.
- The checkpoint holds every rank's RNG states (``rng_per_rank``; ``rng`` is rank 0's), so a
  resume with the same number of processes continues exactly; with another number, the data
  order continues and the other ranks' augmentation streams are re-seeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
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

from lensing import distributed
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
    "onecycle_warmup",
)
SCHEDULES = ("plateau", "onecycle")


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
    batch_size: int = 64  # images per optimizer step and process (x world size under torchrun)
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
    # "plateau": ReduceLROnPlateau on the val AUC, once per epoch; "onecycle": per step, from
    # lr/25 up to each group's lr over the first onecycle_warmup of the run, then cosine down.
    schedule: str = "plateau"
    scheduler_patience: int = 2  # ReduceLROnPlateau: epochs without progress before lr drops
    scheduler_factor: float = 0.5  # ReduceLROnPlateau: lr multiplier when it drops
    onecycle_warmup: float = 0.25  # one-cycle: share of the steps spent raising the lr
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
        _require(
            "onecycle_warmup",
            self.onecycle_warmup,
            lambda v: _is_number(v) and 0 < v < 1,
            "in (0, 1)",
        )
        _require("schedule", self.schedule, lambda v: v in SCHEDULES, f"one of {SCHEDULES}")
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


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
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


def _augment_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of a rank's augmentation generator; rank 0 of a fresh run keeps ``seed + 1``.

    Each rank draws its own augmentations: the same stream on every rank would give the
    images at one batch position the same rotation and shift on every rank.
    """
    if rank == 0 and epoch == 0:
        return seed + 1
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


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

    In a data-parallel job (``rank``, ``world_size``; by default this process's place in the
    current process group) every rank draws the same permutation (same seed, same draws) and
    keeps its share of it (``distributed.shard_epoch``): disjoint, padded by wrap-around to
    ``ceil(N / world_size)`` images per rank, so every rank takes ``len(self)`` steps of
    ``batch_size`` images and a step's global batch is ``batch_size * world_size``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device,
        num_workers: int = 2,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        world = distributed.current()
        self.rank = world.rank if rank is None else rank
        self.world_size = world.world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank {self.rank!r} out of range; expected 0 <= rank < {self.world_size}"
            )
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.n = len(dataset)
        # Images this rank sees per epoch (the padded share).
        self.n_local = -(-self.n // self.world_size)
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
                # The data generator drives the sampler only; given to the DataLoader too, it
                # would also draw the workers' base seed and shift the order.
                sampler=_ShareSampler(self),
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0,
            )

    def __len__(self) -> int:
        return math.ceil(self.n_local / self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """Draw the next epoch's permutation and return this rank's share (LongTensor)."""
        order = torch.randperm(self.n, generator=self.generator)
        return distributed.shard_epoch(order, self.rank, self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is not None:
            for images, labels in self.loader:
                yield self._to_device(images), labels.to(self.device, non_blocking=True)
            return
        order = self.epoch_order().to(self.images.device)
        for start in range(0, len(order), self.batch_size):
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


class _ShareSampler(torch.utils.data.Sampler):
    """The DataLoader's order: the same seeded, sharded permutation as in memory."""

    def __init__(self, batches: TrainBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return self.batches.n_local

    def __iter__(self) -> Iterator[int]:
        return iter(self.batches.epoch_order().tolist())


def _cuda_memory(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).total_memory


def prepare_model(
    model: nn.Module,
    device: torch.device,
    channels_last: bool = True,
    *,
    data_parallel: bool | None = None,
) -> nn.Module:
    """The model on ``device`` in its memory layout: the one place where it gets wrapped.

    data_parallel: wrap it in DistributedDataParallel (gradients averaged over the ranks at
        each backward pass, rank 0's weights copied to every rank here); None: when a
        process group of more than one process is initialized. The plain model is then
        ``model.module``.
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if data_parallel is None:
        data_parallel = distributed.current().distributed
    if data_parallel:
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Gradients live in the communication buckets: no copy in and out of them.
            gradient_as_bucket_view=True,
        )
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Adam:
    """Adam with one parameter group per layer group, each with its own learning rate.

    On CPU and CUDA the fused implementation is used: one kernel for all parameters, about
    twice as fast as the per-tensor loop on this CPU.
    """
    lrs = config.learning_rates()
    groups = [
        {"params": params, "lr": lrs[name], "name": name}
        for name, params in layer_groups(getattr(model, "module", model)).items()
    ]
    device_type = next(model.parameters()).device.type
    fused = device_type in {"cpu", "cuda"}
    return torch.optim.Adam(groups, weight_decay=config.weight_decay, fused=fused or None)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{layer group: learning rate now}, read from the optimizer's parameter groups."""
    return {group["name"]: float(group["lr"]) for group in optimizer.param_groups}


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The learning-rate schedule ``config.schedule`` names.

    "plateau": ReduceLROnPlateau on the validation macro AUC, stepped once per epoch by
    ``fit``. "onecycle": OneCycleLR over ``steps`` optimizer steps, stepped after every
    batch by ``train_one_epoch``; each group rises from its lr / 25 to its own lr during the
    first ``onecycle_warmup`` of the steps, then follows a cosine down to lr / 25e4.
    """
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.scheduler_factor,
            patience=config.scheduler_patience,
        )
    if steps < 2:
        raise ValueError(f"a one-cycle schedule needs at least 2 steps; the run has {steps}")
    lrs = config.learning_rates()
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[lrs[group["name"]] for group in optimizer.param_groups],
        total_steps=steps,
        pct_start=config.onecycle_warmup,
    )


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
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    channels_last: bool = True,
    progress: bool = True,
    description: str = "train",
) -> dict[str, float]:
    """One pass over ``batches`` (images (B, 1, H, W), labels (B,) on ``device``).

    step_scheduler: a per-step schedule (one-cycle), stepped after every optimizer step.

    Returns {"train_loss": mean cross-entropy per image, "images_per_s": training throughput,
    "images": number of images seen}. In a data-parallel job every rank calls it on its own
    share and all three are of the whole job: the loss averaged over every rank's images, the
    images summed, the rate their sum over the slowest rank's time.
    """
    world = distributed.current()
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
        if step_scheduler is not None:
            step_scheduler.step()
        total_loss += loss.detach().double() * len(labels)
        seen += len(labels)
        # Reading the loss forces a device sync, so the bar is refreshed only now and then.
        if progress and step % 10 == 0:
            elapsed = time.perf_counter() - start
            rate = seen * world.world_size / elapsed  # all ranks move in step
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
    summed_loss = float(total_loss.item())  # waits for the device, so the time is complete
    elapsed = time.perf_counter() - start
    if world.distributed:
        sums = torch.tensor([summed_loss, float(seen)], dtype=torch.float64)
        summed_loss, seen = (float(v) for v in distributed.all_reduce(sums))
        seen = int(seen)
        elapsed = float(distributed.all_reduce(torch.tensor(elapsed, dtype=torch.float64), "max"))
    if seen == 0:
        raise ValueError("the training split gave no batch; expected at least one image")
    return {"train_loss": summed_loss / seen, "images_per_s": seen / elapsed, "images": seen}


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
    predictions. In a data-parallel job each rank first takes rank 0's BatchNorm statistics
    (so all ranks hold rank 0's model, the one that is saved), predicts its contiguous share
    of the split (``distributed.shard_range``), and the shares are gathered in split order:
    every rank then scores the whole split, with the same result as one process would.
    """
    from lensing.evaluate import compute_metrics, predict

    world = distributed.current()
    plain = getattr(model, "module", model)  # DDP's forward would synchronize buffers
    if not world.distributed:
        probs, labels = predict(
            plain, dataset, device=device, batch_size=batch_size, precision=precision
        )
    else:
        distributed.broadcast_buffers(plain)
        start, stop = distributed.shard_range(len(dataset), world.rank, world.world_size)
        share_probs = torch.zeros((0, len(CLASSES)), dtype=torch.float64)
        share_labels = torch.zeros(0, dtype=torch.int64)
        if stop > start:
            p, y = predict(
                plain,
                _share(dataset, start, stop),
                device=device,
                batch_size=batch_size,
                precision=precision,
            )
            share_probs, share_labels = torch.from_numpy(p), torch.from_numpy(y)
        probs = distributed.gather_rows(share_probs).numpy()
        labels = distributed.gather_rows(share_labels).numpy()
        if len(labels) != len(dataset):
            raise RuntimeError(
                f"gathered {len(labels)} validation predictions; expected {len(dataset)}"
            )
    metrics = compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=0)
    picked = probs[np.arange(len(labels)), labels]
    val_loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    return {
        "val_loss": val_loss,
        "val_auc": metrics["auc_macro"],
        "val_accuracy": metrics["accuracy"],
    }


def _share(dataset: Any, start: int, stop: int) -> Any:
    """Items ``start..stop-1`` of a data set, in a form ``evaluate.predict`` accepts."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        return dataset[0][start:stop], dataset[1][start:stop]
    if getattr(dataset, "images", None) is not None:
        return dataset.images[start:stop], torch.as_tensor(dataset.labels)[start:stop]
    return torch.utils.data.Subset(dataset, range(start, stop))


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
        training, and the exception propagates. In a data-parallel job it is called on rank 0
        only; if it raises, the other ranks stop after the same epoch and return normally.
    progress: progress bars and one log line per epoch (rank 0 only); False keeps quiet.

    Returns
    -------
    {"history": list of per-epoch dicts, "best_val_auc": float or None, "epochs_trained": epochs
    run by this call, "start_epoch": epochs already done before it, "checkpoint": path,
    "best_checkpoint": path, "pretrained": bool}, the same on every rank.

    Data-parallel when a process group of several processes is initialized
    (``lensing.distributed.process_group()``, which ``python -m lensing train`` enters under
    torchrun); every rank must then call ``fit`` with the same config.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    distributed.warn_if_alone()
    world = distributed.current()
    progress = progress and world.is_main
    out_dir = Path(config.out_dir)
    checkpoint_path, best_path = out_dir / CHECKPOINT, out_dir / BEST_MODEL
    device = distributed.rank_device(pick_device(config.device))
    precision = resolve_precision(config.precision, device)

    # Rank 0 reads the checkpoint and hands it to the others: one read, one version, and no
    # need for a file system shared by every machine.
    state = _on_main_then_shared(
        lambda: _read_resume_state(config, checkpoint_path) if config.resume else None
    )
    if datasets is None:
        with distributed.local_main_first():  # the first reader writes the data cache
            datasets = load_datasets(config, progress=progress)
    for split in ("train", "val"):
        if split not in datasets:
            raise ValueError(f"datasets lacks {split!r}; expected keys 'train' and 'val'")

    _seed_everything(config.seed)
    generators = {
        # The same on every rank: all ranks draw the same permutation and keep their share.
        "data": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator().manual_seed(_augment_seed(config.seed, world.rank)),
    }
    if state is not None:
        # Resumed weights come from the checkpoint, so the ImageNet ones need not be fetched.
        model = build_model("none", num_classes=len(CLASSES))
        pretrained = bool(state.get("pretrained", False))
    else:
        # Only rank 0 fetches or reads pretrained weights; DDP copies them to the other ranks.
        built: dict[str, nn.Module] = {}

        def build() -> bool:
            built["model"] = build_model(config.pretrained, num_classes=len(CLASSES))
            return built["model"].is_pretrained

        pretrained = _on_main_then_shared(build)
        model = built.get("model") or build_model("none", num_classes=len(CLASSES))
    optimizer_state = None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {checkpoint_path} does not fit this model: {_first_line(error)}"
            ) from error
        optimizer_state = state["optimizer"]
    model = prepare_model(model, device, config.channels_last)
    optimizer = make_optimizer(model, config)
    batches = TrainBatches(
        datasets["train"], config.batch_size, generators["data"], device, config.num_workers
    )
    scheduler = make_scheduler(optimizer, config, len(batches) * config.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: list[dict[str, Any]] = []
    best_val_auc: float | None = None
    start_epoch = 0
    if state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {checkpoint_path} does not fit this model/optimizer: "
                f"{_first_line(error)}"
            ) from error
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best_val_auc = state["best_val_auc"]
        start_epoch = int(state["epoch"])
        remaining = len(batches) * (config.epochs - start_epoch)
        replan = config.schedule == "onecycle" and remaining > 0
        if replan and scheduler.last_epoch + remaining != scheduler.total_steps:
            # The saved cycle does not end with this run's last epoch (continue_training asks
            # for more epochs): a new cycle over the epochs still to run, same peak rates.
            scheduler = make_scheduler(optimizer, config, remaining)
            _log(progress, f"one-cycle schedule: a new cycle over {remaining} steps")
        if "rng" in state:
            _restore_rng(state, generators, config.seed, start_epoch)
    if world.is_main:
        atomic_write_json(out_dir / CONFIG_JSON, asdict(config))

    per_step = scheduler if config.schedule == "onecycle" else None
    criterion = nn.CrossEntropyLoss()
    scale = (
        f", {world.world_size} processes x batch {config.batch_size} = global batch "
        f"{config.batch_size * world.world_size}"
        if world.distributed
        else ""
    )
    _log(
        progress,
        f"training on {device} ({precision}){scale}, {len(datasets['train'])} train / "
        f"{len(datasets['val'])} val images, pretrained={pretrained}, epochs "
        f"{start_epoch + 1}..{config.epochs}",
    )
    run_start = time.perf_counter()
    epochs_trained = 0
    for epoch in range(start_epoch, config.epochs):
        # The history is the same on every rank, so every rank stops at the same epoch.
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
            step_scheduler=per_step,
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
        val = {key: entry[key] for key in val}
        if per_step is None:
            scheduler.step(val["val_auc"])
        history.append(entry)
        improved = best_val_auc is None or val["val_auc"] > best_val_auc
        if improved:
            best_val_auc = val["val_auc"]
        rng_states = distributed.gather_objects(_rng_state(generators))
        if world.is_main:
            if improved:
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
                "rng": rng_states[0],
                "pretrained": pretrained,
                "classes": list(CLASSES),
                "precision": precision,
                "world_size": world.world_size,
            }
            if world.distributed:
                checkpoint["rng_per_rank"] = rng_states
            if scaler.is_enabled():
                checkpoint["scaler"] = scaler.state_dict()
            atomic_torch_save(checkpoint, checkpoint_path)
        distributed.barrier()  # no rank runs ahead of a checkpoint that is not yet on disk
        epochs_trained += 1
        elapsed = time.perf_counter() - run_start
        eta = elapsed / epochs_trained * (config.epochs - epoch - 1)
        _log(progress, _epoch_line(entry, config.epochs, eta))
        if on_epoch_end is not None and _stopped_by(on_epoch_end, epoch + 1, entry):
            break
    return {
        "history": history,
        "best_val_auc": best_val_auc,
        "epochs_trained": epochs_trained,
        "start_epoch": start_epoch,
        "checkpoint": str(checkpoint_path),
        "best_checkpoint": str(best_path),
        "pretrained": pretrained,
    }


def _stopped_by(
    on_epoch_end: Callable[[int, dict[str, Any]], None], epoch: int, entry: dict[str, Any]
) -> bool:
    """Call ``on_epoch_end`` on rank 0; True on the other ranks when it raised there.

    On rank 0 its exception propagates (after the other ranks have been told to stop, so
    none of them waits forever for the next epoch's collectives).
    """
    world = distributed.current()
    error: Exception | None = None
    if world.is_main:
        try:
            on_epoch_end(epoch, entry)
        except Exception as caught:  # e.g. optuna.TrialPruned: any exception stops training
            error = caught
    stop = distributed.broadcast_object(error is not None)
    if error is not None:
        raise error
    return stop


def _on_main_then_shared(make: Callable[[], Any]) -> Any:
    """``make()`` run on rank 0 only, its result (or its error) handed to every rank.

    An error on rank 0 is raised on every rank (same type when it can be rebuilt from its
    message, else RuntimeError), so no rank is left waiting in a collective.
    """
    world = distributed.current()
    if not world.distributed:
        return make()
    result, failure = None, None
    if world.is_main:
        try:
            result = make()
        except Exception as error:
            kind = type(error)
            try:
                pickle.dumps(kind)
            except Exception:  # a class defined in a function cannot be sent
                kind = RuntimeError
            distributed.broadcast_object((None, (kind, str(error))))
            raise
    result, failure = distributed.broadcast_object((result, failure))
    if failure is not None:
        kind, message = failure
        try:
            error = kind(message)
        except Exception:
            error = RuntimeError(message)
        raise error
    return result


def _read_resume_state(config: TrainConfig, checkpoint_path: Path) -> dict[str, Any] | None:
    if not checkpoint_path.exists():
        return None
    state = load_checkpoint(checkpoint_path, require=TRAINING_KEYS)
    saved_schedule = state["config"].get("schedule", "plateau")  # older checkpoints: plateau
    if saved_schedule != config.schedule:
        raise CheckpointError(
            f"checkpoint {checkpoint_path} was trained with schedule {saved_schedule!r}; "
            f"this run asks for {config.schedule!r}. Resume with --schedule {saved_schedule} "
            "or train into another folder"
        )
    _warn_on_changed_config(state["config"], config, checkpoint_path)
    world_size = distributed.current().world_size
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        warnings.warn(
            f"resuming {checkpoint_path} with {world_size} process(es); it was written by "
            f"{saved}: the global batch changes from {saved * config.batch_size} to "
            f"{world_size * config.batch_size} images and the augmentation draws differ",
            RuntimeWarning,
            stacklevel=3,
        )
    return state


def _restore_rng(
    state: dict[str, Any], generators: dict[str, torch.Generator], seed: int, epoch: int
) -> None:
    """Each rank's own RNG states when the world size is unchanged; else rank 0's.

    Rank 0's states carry the data order, which every rank shares; the other ranks'
    augmentation generators are then seeded afresh from (seed, rank, epoch).
    """
    world = distributed.current()
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == world.world_size:
        _set_rng_state(per_rank[world.rank], generators)
        return
    _set_rng_state(state["rng"], generators)
    if world.rank > 0:
        generators["augment"].manual_seed(_augment_seed(seed, world.rank, epoch))


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
        "--batch-size",
        type=int,
        default=default("batch_size"),
        help="images per step and process; under torchrun the global batch is this times "
        "the number of processes (%(default)s)",
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
        "--schedule",
        default=default("schedule"),
        choices=SCHEDULES,
        help="plateau: ReduceLROnPlateau on the val AUC each epoch; onecycle: per-step "
        "warm-up to each group's lr, then cosine decay (%(default)s)",
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
    """``python -m lensing train``; under torchrun every process runs it (data-parallel)."""
    args = get_args_parser().parse_args(argv)
    world = distributed.World()
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
            schedule=args.schedule,
            seed=args.seed,
            device=args.device,
            resume=args.resume,
            early_stopping=args.early_stopping,
            num_workers=args.num_workers,
        )
        with distributed.process_group(config.device) as world:
            result = fit(config, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, CheckpointError) as error:
        where = f"rank {world.rank}: " if world.distributed else ""
        print(f"error: {where}{error}", file=sys.stderr)
        return 2
    if not world.is_main:
        return 0
    best = result["best_val_auc"]
    print(
        f"best val AUC {best:.4f}" if best is not None else "no epoch trained",
        f"(pretrained={result['pretrained']}); "
        f"best model {result['best_checkpoint']}, checkpoint {result['checkpoint']}",
    )
    return 0
