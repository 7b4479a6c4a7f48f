"""``TrainConfig``: everything one training run depends on, each value checked.

It is saved as ``config.json`` beside every run's checkpoints and inside them; an unknown key
is an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lensing.core.constants import (
    AUGMENTATIONS,
    BATCH_SIZE,
    LAYER_GROUPS,
    MODELS,
    MODELS_DIR,
    PRECISIONS,
    RESNET18,
    SCHEDULES,
    SIMULATED_DATA_DIR,
    STRETCHES,
    canonical_augmentation,
)


@dataclass
class TrainConfig:
    """Everything one training run depends on; saved as ``config.json`` and in checkpoints."""

    # train/ val/ [test/] folders. The commands and the notebook pass the real set's folder
    # when it has been downloaded (lensing.cli.choice); the default is the simulated one.
    data_dir: str = str(SIMULATED_DATA_DIR)
    out_dir: str = str(MODELS_DIR)  # where checkpoint.pth, best_model.pth, config.json go
    epochs: int = 10  # total number of epochs (a resumed run trains up to this number)
    batch_size: int = (
        BATCH_SIZE  # images per optimizer step and process (x world size under torchrun)
    )
    # The learning rates, one per layer group (a one-cycle schedule's peaks): early layers move
    # least. Measured best for fine-tuning the pretrained (lensing) weights, which every run
    # starts from by default; from random weights the recipe "from-scratch" (1e-3 each) is.
    lr_early: float = 1e-5  # Adam lr of conv1, bn1, layer1
    lr_middle: float = 1e-4  # Adam lr of layer2
    lr_late: float = 3e-4  # Adam lr of layer3, layer4
    lr_fc: float = 1e-3  # Adam lr of the final fully connected layer
    weight_decay: float = 0.0  # Adam L2 penalty, same for every group
    # The backbone: "resnet18" (torchvision's, the seed's) or "d4-resnet" (D4 group convolutions:
    # the same logits for every turn and flip of an image; no pretrained weights exist for it).
    model: str = RESNET18
    # "imagenet" (the package's "lensing" weights where ImageNet's cannot be had), "lensing",
    # "none" (random init) or a PATH to a weights file.
    pretrained: str = "imagenet"
    precision: str = "auto"  # "auto" (bf16 where native, fp16 on old GPUs), "fp32", "bf16"
    # "flip-affine": the seed notebook's flip, rotation <= 10 deg, shift <= 5 %, zoom 0.95-1.05;
    # "d4": the 8 exact flips and 90-degree turns; "none". "seed" is an old name of flip-affine.
    augment: str = "d4"
    stretch: str = "none"  # input stretch before the network: "none", "log" or "arcsinh"
    seed: int = 0  # seeds weights init, data order and augmentation
    device: str = "auto"  # "auto" (cuda, mps, cpu), or "cpu", "cuda", "cuda:1", "mps"
    resume: bool = False  # continue from <out_dir>/checkpoint.pth when it exists
    early_stopping: int = 0  # stop after this many epochs without a better val AUC; 0 = off
    # "plateau": ReduceLROnPlateau on the val AUC, once per epoch; "onecycle": per step, from
    # lr/25 up to each group's lr over the first onecycle_warmup of the run, then cosine down.
    schedule: str = "onecycle"
    scheduler_patience: int = 2  # ReduceLROnPlateau: epochs without progress before lr drops
    scheduler_factor: float = 0.5  # ReduceLROnPlateau: lr multiplier when it drops
    onecycle_warmup: float = 0.25  # one-cycle: share of the steps spent raising the lr
    num_workers: int = 2  # DataLoader workers when the data is not held in memory
    in_memory: bool = True  # hold each split as one tensor (2.7 GB for the real train set)
    eval_batch_size: int = 256  # images per forward pass in validation
    channels_last: bool = True  # NHWC memory layout (faster convolutions, needed for CPU bf16)
    compile: bool = False  # torch.compile the model (GPUs: faster steps after a warm-up)

    def __post_init__(self) -> None:
        self.data_dir = str(self.data_dir)
        self.out_dir = str(self.out_dir)
        self.pretrained = str(self.pretrained)
        self.augment = canonical_augmentation(self.augment)
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
        _require("stretch", self.stretch, lambda v: v in STRETCHES, f"one of {STRETCHES}")
        _require("schedule", self.schedule, lambda v: v in SCHEDULES, f"one of {SCHEDULES}")
        _require("precision", self.precision, lambda v: v in PRECISIONS, f"one of {PRECISIONS}")
        _require("model", self.model, lambda v: v in MODELS, f"one of {MODELS}")
        _require("augment", self.augment, lambda v: v in AUGMENTATIONS, f"one of {AUGMENTATIONS}")

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
