"""Shared fixtures of the evaluation tests: a ResNet18 fitted to a small data set.

Claims such as "the temperature is fitted on the validation split" or "predict gives the
probabilities evaluate scores" can only fail with a model whose outputs depend on the image
and carry a class signal; a fresh network in eval mode gives nearly the same probabilities for
every input. Training a ResNet18 takes minutes on a CPU, so the one here is fitted in seconds:
its batch-norm statistics are those of the (stretched) train images, its convolutions keep
their random weights, and its final layer is fitted by L-BFGS, an L2-penalized logistic
regression on the random features. It gets well above chance on the validation split without
being sure of every image, so a temperature fitted there lies inside its bounds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lensing.core.atomic import atomic_torch_save
from lensing.core.constants import CLASSES
from lensing.data.dataset import LensingDataset
from lensing.data.stretch import apply_stretch
from lensing.model.inference import predict_split
from lensing.model.network import build_model

TRAINED_COUNTS = {"train": 8, "val": 6, "test": 3}  # images per class of each split
TRAINED_STRETCH = "log"  # so that predictions which skip the stretch differ
FC_PENALTY = 0.01  # L2 penalty on the final layer: confident, not certain, on val


@dataclass(frozen=True)
class Trained:
    """A fitted model, its data set and its checkpoint.

    root: the data set (``TRAINED_COUNTS`` images per class, ``write_set``'s patterns).
    checkpoint: the pristine ``best_model.pth``; evaluate writes a temperature into the file it
        is given, so tests evaluate a copy (``copy_checkpoint``).
    model: the fitted ResNet18 (eval mode, CPU).
    probs: {"val": (N, 3), "test": (N, 3)} its probabilities without TTA, fp32, split order.
    labels: {"val": (N,), "test": (N,)} the true classes.
    stretch: the input stretch it was fitted with (also in the checkpoint's config).
    """

    root: Path
    checkpoint: Path
    model: torch.nn.Module
    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    stretch: str = TRAINED_STRETCH

    def copy_checkpoint(self, folder: Path, **extra) -> Path:
        """A copy of the checkpoint in ``folder``, with ``extra`` entries added."""
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(shutil.copy(self.checkpoint, folder / "best_model.pth"))
        if extra:
            state = torch.load(path, map_location="cpu", weights_only=True)
            atomic_torch_save(state | extra, path)
        return path


def fit_model(images: torch.Tensor, labels: torch.Tensor, stretch: str) -> torch.nn.Module:
    """A ResNet18 with random convolutions, batch-norm statistics of ``images`` and a final
    layer fitted to (images, labels); returned in eval mode."""
    torch.manual_seed(0)
    model = build_model("none")
    x = apply_stretch(images, stretch)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # one pass: the running statistics are the batch's
        model.train()
        model(x)
        model.eval()
        fc, model.fc = model.fc, torch.nn.Identity()
        features = model(x)
        model.fc = fc
    optimizer = torch.optim.LBFGS(fc.parameters(), max_iter=100)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(fc(features), labels)
        value = value + FC_PENALTY * fc.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    return model.requires_grad_(True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, write_set) -> Trained:
    """The fitted model shared by the evaluation tests (about 5 s to build on 2 cores)."""
    folder = tmp_path_factory.mktemp("trained")
    root = write_set(folder / "set", TRAINED_COUNTS, seed=0)
    train = LensingDataset(root, "train", progress=False, cache=False)
    model = fit_model(train.images, train.labels, TRAINED_STRETCH)
    state = {
        "model": model.state_dict(),
        "classes": list(CLASSES),
        "config": {"pretrained": "none", "stretch": TRAINED_STRETCH},
        "pretrained": False,
    }
    checkpoint = atomic_torch_save(state, folder / "model" / "best_model.pth")
    probs, labels = {}, {}
    for split in ("val", "test"):
        dataset = LensingDataset(root, split, progress=False, cache=False)
        probs[split], labels[split] = predict_split(
            model, dataset, device="cpu", precision="fp32", stretch=TRAINED_STRETCH
        )
    # A real signal: well above chance (1/3) on images it was not fitted on.
    accuracy = np.mean(probs["val"].argmax(axis=1) == labels["val"])
    assert accuracy >= 0.6, f"the fitted model gets {accuracy:.2f} of val right"
    return Trained(root, checkpoint, model, probs, labels)
