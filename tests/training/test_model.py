"""The ResNet18 builder, its layer groups and the device/precision helpers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from numpy.testing import assert_allclose
from torch import nn

import lensing.model.network
from lensing.core.constants import LAYER_GROUPS
from lensing.model.lensing_weights import load_lensing_weights, weights_label
from lensing.model.network import (
    GROUP_MODULES,
    build_model,
    layer_groups,
)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("none")


def test_one_channel_in_three_logits_out_every_parameter_trainable(model):
    assert model.conv1.in_channels == 1
    assert model.fc.out_features == 3
    assert model.is_pretrained is False and model.weights == "none"
    assert all(p.requires_grad for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 150, 150)).shape == (2, 3)


def test_layer_groups_partition_the_parameters(model):
    groups = layer_groups(model)
    assert list(groups) == list(LAYER_GROUPS)
    grouped = [id(p) for params in groups.values() for p in params]
    assert len(grouped) == len(set(grouped))  # no parameter in two groups
    assert set(grouped) == {id(p) for p in model.parameters()}  # none left out
    names = {id(p): name for name, p in model.named_parameters()}
    for group, params in groups.items():
        assert params, f"group {group} is empty"
        for p in params:
            assert names[id(p)].split(".")[0] in GROUP_MODULES[group]
    assert {names[id(p)] for p in groups["fc"]} == {"fc.weight", "fc.bias"}
    assert "conv1.weight" in {names[id(p)] for p in groups["early"]}


def test_layer_groups_refuse_a_parameter_outside_the_groups(model):
    extra = build_model("none")
    extra.head = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="head.weight"):
        layer_groups(extra)


@pytest.fixture
def torchvision_weights(tmp_path):
    """A randomly initialized torchvision resnet18 (3-channel conv1, 1000 classes), saved."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_rgb_weights_give_the_same_activations_for_a_grey_image(torchvision_weights):
    reference, path = torchvision_weights
    model = build_model(path)
    assert model.is_pretrained is True
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    grey = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    rgb = grey.repeat(1, 3, 1, 1)
    reference.eval()
    model.eval()
    with torch.no_grad():
        assert_allclose(model.conv1(grey).numpy(), reference.conv1(rgb).numpy(), atol=1e-5)
        # The whole network up to the new fc agrees too.
        reference.fc, model.fc = nn.Identity(), nn.Identity()
        assert_allclose(model(grey).numpy(), reference(rgb).numpy(), rtol=1e-4, atol=1e-5)


def test_our_own_checkpoint_loads_every_weight_including_fc(tmp_path):
    torch.manual_seed(2)
    source = build_model("none")
    path = tmp_path / "best_model.pth"
    torch.save({"model": source.state_dict(), "val_auc": 0.9}, path)
    loaded = build_model(path)
    expected, got = source.state_dict(), loaded.state_dict()
    assert list(expected) == list(got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_a_bad_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither 'imagenet', 'lensing', 'none' nor an existing"):
        build_model(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        build_model(junk)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(ValueError, match="tensor.pth"):
        build_model(tensor_file)
    wrong = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(ValueError, match="does not hold ResNet18 weights"):
        build_model(wrong)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path, and a process that has not looked for weights."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(lensing.model.network, "_imagenet_failure", None)
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_without_network_falls_back_to_the_lensing_weights_and_says_so_once(
    hub_cache, monkeypatch, capsys
):
    attempts = []

    def offline(url, dst, *args, **kwargs):
        attempts.append(url)
        raise OSError("no network (test)")

    # The package downloads through this name; the test never touches the network.
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    first, second = build_model("imagenet"), build_model("imagenet")
    assert first.is_pretrained is True and second.is_pretrained is True
    assert first.weights == second.weights == weights_label()
    shipped = load_lensing_weights()
    assert torch.equal(first.conv1.weight.detach(), shipped["conv1.weight"])
    assert torch.equal(second.fc.bias.detach(), shipped["fc.bias"])
    out, err = capsys.readouterr()
    assert err.count("no ImageNet weights") == 1, err
    assert "LENSING weights" in err and weights_label() in err
    assert f"resnet18-f37072fd.pth into {hub_cache}" in err
    assert "no network (test)" in err
    assert "Downloading" not in out + err
    assert len(attempts) == 1  # the second model does not wait for the network again


def test_imagenet_weights_come_from_the_hub_cache_without_network(hub_cache, monkeypatch, capsys):
    def no_download(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    torch.manual_seed(1)
    rgb = torchvision.models.resnet18(weights=None).state_dict()
    hub_cache.mkdir(parents=True)
    torch.save(rgb, hub_cache / "resnet18-f37072fd.pth")
    model = build_model("imagenet")
    assert model.is_pretrained is True and model.weights == "imagenet"
    expected = rgb["conv1.weight"].sum(dim=1, keepdim=True)
    assert_allclose(model.conv1.weight.detach(), expected, atol=1e-6)
    out, err = capsys.readouterr()
    assert "WARNING" not in err and "Download" not in out + err


def test_the_lensing_weights_load_into_every_layer_fc_included():
    model = build_model("lensing")
    assert model.is_pretrained is True and model.weights == weights_label()
    shipped = load_lensing_weights()
    got = model.state_dict()
    assert set(shipped) == set(got)
    for name, tensor in shipped.items():
        assert torch.equal(got[name], tensor), name
