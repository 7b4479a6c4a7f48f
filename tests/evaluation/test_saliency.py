"""Tests for lensing/saliency.py: Grad-CAM maps land where the decision is made, and the model
is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

from lensing.evaluation.saliency import saliency_maps

SIZE = 32  # pixels per side of the toy images


class QuadrantMask(nn.Module):
    """Zero a feature map everywhere except one quadrant."""

    def __init__(self, top: bool, left: bool) -> None:
        super().__init__()
        self.top, self.left = top, left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        mask = torch.zeros_like(x)
        rows = slice(0, h) if self.top else slice(h, None)
        columns = slice(0, w) if self.left else slice(w, None)
        mask[..., rows, columns] = 1.0
        return x * mask


class QuadrantNet(nn.Module):
    """A small conv net whose logits depend only on one quadrant of the image: its ``layer4``
    output is masked to that quadrant before global pooling.

    Positive convolution weights on positive images make every feature positive, so class 0
    (all fc weights +1) is predicted and has positive evidence, while class 1 (all -1) has none.
    """

    def __init__(self, top: bool = True, left: bool = True) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), QuadrantMask(top, left)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            for conv in (self.stem[0], self.layer4[0]):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator))
                conv.bias.zero_()
            self.fc.weight.copy_(torch.stack([torch.ones(8), -torch.ones(8), 0.5 * torch.ones(8)]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer4(self.stem(x))).flatten(1))


def toy_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, SIZE, SIZE), generator=generator)


def quadrant_share(maps: np.ndarray, top: bool, left: bool) -> np.ndarray:
    """Share of each map's total mass inside one quadrant."""
    half = SIZE // 2
    rows = slice(0, half) if top else slice(half, None)
    columns = slice(0, half) if left else slice(half, None)
    return maps[:, rows, columns].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))


@pytest.mark.parametrize(("top", "left"), [(True, True), (True, False)])
def test_map_mass_lies_in_the_quadrant_that_decides(top: bool, left: bool) -> None:
    model = QuadrantNet(top, left)
    maps = saliency_maps(model, toy_images(5))
    assert maps.shape == (5, SIZE, SIZE) and maps.dtype == np.float32
    assert np.all(maps >= 0)
    assert_allclose(maps.reshape(5, -1).max(axis=1), 1.0)
    assert np.all(quadrant_share(maps, top, left) > 0.7)


def test_default_target_is_the_predicted_class() -> None:
    model = QuadrantNet()
    images = toy_images(4)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    assert torch.all(predicted == 0)
    assert_allclose(saliency_maps(model, images), saliency_maps(model, images, targets=predicted))


def test_map_without_positive_evidence_stays_zero() -> None:
    maps = saliency_maps(QuadrantNet(), toy_images(3), targets=1)
    assert np.all(np.isfinite(maps))
    assert np.all(maps == 0.0)


def test_resnet_maps_leave_the_model_as_it_was() -> None:
    from lensing.model.network import build_model

    model = build_model("none").to(memory_format=torch.channels_last)
    model.train()
    model.layer1.eval()  # a mixed state, as with frozen blocks, must come back exactly
    running_mean = model.bn1.running_mean.clone()
    images = toy_images(3).to(memory_format=torch.channels_last)
    maps = saliency_maps(model, images, targets=[0, 1, 2], batch_size=2)
    assert maps.shape == (3, SIZE, SIZE)
    assert np.all((maps >= 0) & (maps <= 1))
    assert model.training and not model.layer1.training and model.layer2.training
    assert all(p.grad is None for p in model.parameters())
    # Batch-norm statistics are untouched because the maps were computed in eval mode.
    assert torch.equal(model.bn1.running_mean, running_mean)


def test_existing_gradients_are_kept() -> None:
    model = QuadrantNet()
    grad = torch.full_like(model.fc.weight, 0.25)
    model.fc.weight.grad = grad
    saliency_maps(model, toy_images(2))
    assert model.fc.weight.grad is grad
    assert model.stem[0].weight.grad is None


def test_works_inside_inference_mode_and_for_a_double_model() -> None:
    model = QuadrantNet()
    images = toy_images(2)
    expected = saliency_maps(model, images)
    with torch.inference_mode():
        assert_allclose(saliency_maps(model, images), expected)
    model.double()
    assert_allclose(saliency_maps(model, images.double()), expected, atol=1e-5)
    assert next(model.parameters()).dtype == torch.float64  # the copy was converted, not it


def test_layer_can_be_chosen_by_module_or_name() -> None:
    model = QuadrantNet()
    images = toy_images(2)
    by_module = saliency_maps(model, images, layer=model.layer4[0])
    assert_allclose(saliency_maps(model, images, layer="layer4.0"), by_module)
    # Before the mask, the stem's map is spread over the image, not confined to a quadrant.
    stem = saliency_maps(model, images, layer="stem")
    assert np.all(quadrant_share(stem, True, True) < 0.7)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"targets": 3}, ValueError, "out of range"),
        ({"targets": [0, 1, 2]}, ValueError, "one per image"),
        ({"layer": "layer9"}, ValueError, "no module named 'layer9'"),
        ({"layer": nn.Conv2d(1, 1, 1)}, ValueError, "not a submodule"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        saliency_maps(QuadrantNet(), toy_images(2), **kwargs)


def test_bad_images_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        saliency_maps(QuadrantNet(), torch.rand(1, SIZE, SIZE))
    with pytest.raises(TypeError, match="torch.Tensor"):
        saliency_maps(QuadrantNet(), np.zeros((1, 1, SIZE, SIZE), np.float32))
