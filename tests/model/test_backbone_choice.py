"""The backbone choice (``TrainConfig.model``, ``--model``) through the package: fit, resume,
the checkpoint, ``predict`` and its labels, with the D4 ResNet on a small real data set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lensing.cli import main
from lensing.core.constants import CLASSES
from lensing.model import network
from lensing.model.equivariant import D4ResNet, build_equivariant
from lensing.model.inference import load_trained_model
from lensing.model.network import build_model, layer_groups
from lensing.training.config import TrainConfig
from lensing.training.fit import fit


def test_unknown_backbone_and_foreign_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of resnet18, d4-resnet"):
        build_model("none", model="resnet50")
    with pytest.raises(ValueError, match="model"):
        TrainConfig(model="resnet50")
    with pytest.raises(ValueError, match="lensing weights are ResNet18's"):
        build_model("lensing", model="d4-resnet")
    resnet = tmp_path / "resnet.pth"
    torch.save(build_model("none").state_dict(), resnet)
    with pytest.raises(ValueError, match="does not hold d4-resnet weights"):
        build_model(str(resnet), model="d4-resnet")


def test_imagenet_for_d4_starts_random_and_says_so(capsys: pytest.CaptureFixture) -> None:
    model = build_model("imagenet", model="d4-resnet")
    assert isinstance(model, D4ResNet) and not model.is_pretrained and model.weights == "none"
    assert sum(len(p) for p in layer_groups(model).values()) == len(list(model.parameters()))
    build_model("imagenet", model="d4-resnet")
    assert capsys.readouterr().err.count("no pretrained weights exist for d4-resnet") <= 1


@pytest.fixture(scope="module")
def trained(module_tmp, write_set) -> dict:
    """A d4-resnet trained 1 epoch, then resumed to 2, on 4 images per class."""
    root = module_tmp("d4")
    data = write_set(root / "set", {"train": 4, "val": 2, "test": 2})
    fields = {"data_dir": str(data), "out_dir": str(root / "run"), "model": "d4-resnet"}
    fields |= {"pretrained": "none", "batch_size": 4, "precision": "fp32", "epochs": 1}
    first = fit(TrainConfig(**fields), progress=False)
    second = fit(TrainConfig(**fields | {"epochs": 2, "resume": True}), progress=False)
    return {"data": data, "run": root / "run", "first": first, "second": second}


@pytest.mark.slow
def test_d4_checkpoint_round_trip_and_resume(trained: dict) -> None:
    assert trained["first"]["weights"] == "none"
    assert [e["epoch"] for e in trained["second"]["history"]] == [1, 2]
    model, state = load_trained_model(trained["run"] / "checkpoint.pth")
    assert isinstance(model, D4ResNet)
    assert state["config"]["model"] == "d4-resnet"
    saved = json.loads((trained["run"] / "config.json").read_text())
    assert saved["model"] == "d4-resnet"


@pytest.mark.slow
def test_predict_gives_one_answer_for_every_turn_and_flip(trained: dict, tmp_path: Path) -> None:
    source = np.load(trained["data"] / "test" / "sphere" / "1.npy")[0]
    views = [np.rot90(source, k) for k in range(4)]
    views += [np.rot90(source[:, ::-1], k) for k in range(4)]
    for i, view in enumerate(views):
        np.save(tmp_path / f"{i}.npy", np.ascontiguousarray(view))
    out = tmp_path / "predictions.csv"
    argv = ["predict", "--checkpoint", str(trained["run"] / "best_model.pth"), str(tmp_path)]
    assert main([*argv, "--out", str(out), "--device", "cpu", "--precision", "fp32"]) == 0
    table = pd.read_csv(out)
    probabilities = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert len(table) == 8
    np.testing.assert_allclose(probabilities, probabilities[:1].repeat(8, axis=0), atol=1e-5)


def test_d4_weights_of_other_widths_load_with_their_widths(tmp_path: Path) -> None:
    """A weights file of a d4-resnet narrower than the default (as checkpoints of the first
    default, (12, 24, 48, 96), are wider) builds the network of its own widths, same logits."""
    source = build_equivariant(widths=(2, 3, 4, 5)).eval()
    path = tmp_path / "narrow.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model(str(path), model="d4-resnet").eval()
    assert loaded.widths == (2, 3, 4, 5) and loaded.is_pretrained
    x = torch.rand(2, 1, 150, 150)
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


@pytest.mark.slow
def test_a_d4_checkpoint_of_other_widths_resumes_and_predicts(
    write_set, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained at widths (4, 4, 4, 4), then resumed and loaded by code whose default differs:
    the checkpoint's own widths are built, so nothing is refused or retrained."""
    data = write_set(tmp_path / "set", {"train": 4, "val": 2, "test": 2})
    fields = {"data_dir": str(data), "out_dir": str(tmp_path / "run"), "model": "d4-resnet"}
    fields |= {"pretrained": "none", "batch_size": 4, "precision": "fp32", "epochs": 1}
    with monkeypatch.context() as patch:
        patch.setattr(network, "build_equivariant", lambda n: build_equivariant(n, (4, 4, 4, 4)))
        fit(TrainConfig(**fields), progress=False)
    resumed = fit(TrainConfig(**fields | {"epochs": 2, "resume": True}), progress=False)
    assert [e["epoch"] for e in resumed["history"]] == [1, 2]
    model, _ = load_trained_model(tmp_path / "run" / "checkpoint.pth")
    assert model.widths == (4, 4, 4, 4)
