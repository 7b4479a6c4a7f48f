"""Where in an image the classifier looks: Grad-CAM class-activation maps.

Grad-CAM weights each channel of a convolutional layer's output by the mean gradient of the
class score with respect to it, sums the channels, keeps the positive part (evidence for the
class) and upsamples the coarse map to the image. For the ResNet18 the default layer is
``layer4``, the last convolutional block (5 x 5 cells for a 150 x 150 image): the most
class-specific features, at the coarsest resolution.

Maps are computed on the CPU in float32, whatever device or precision the model was used in,
so they are the same on every machine; they are meant for a handful of images per figure.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

DEFAULT_LAYER = "layer4"


def saliency_maps(
    model: nn.Module,
    images: Tensor,
    targets: int | Sequence[int] | Tensor | np.ndarray | None = None,
    layer: nn.Module | str | None = None,
    batch_size: int = 32,
    interpolate_mode: str = "bilinear",
) -> np.ndarray:
    """Grad-CAM map of each image for one class, scaled to [0, 1].

    Parameters
    ----------
    model: classifier mapping (B, 1, H, W) float images to (B, K) logits, on any device, in any
        precision and memory format (channels_last included). Used in eval mode; its own
        train/eval flags are restored afterwards and no ``.grad`` is left on its parameters. A
        model that is not on the CPU in float32 is copied there and left untouched.
    images: float tensor (B, 1, H, W), pixel values as the model was trained on.
    targets: class whose evidence is mapped: one int for every image, or B ints. None: the
        class each image is predicted as.
    layer: the convolutional module to explain, or its name in ``model.named_modules()``;
        None is ``model.layer4``.
    batch_size: images per forward/backward pass.
    interpolate_mode: how the layer's map is upsampled to (H, W), a mode of
        ``torch.nn.functional.interpolate`` for 4-D input ("bilinear", "nearest", ...).

    Returns
    -------
    float32 array (B, H, W), non-negative; each map divided by its maximum, so its largest
    value is 1, except a map with no positive evidence, which stays all zero.
    """
    _check_images(images)
    model = _unwrap(model)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    layer_name = _layer_name(model, layer)
    work = _cpu_fp32(model)
    explained = work.get_submodule(layer_name)
    flags = {module: module.training for module in model.modules()}
    saved_grads = [p.grad for p in model.parameters()]
    work.eval()
    try:
        # Grad-CAM needs gradients even when the caller runs under inference_mode or no_grad.
        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().to("cpu", torch.float32).clone()
            chosen = _targets(work, x, targets, batch_size)
            maps = [
                _grad_cam(
                    work,
                    explained,
                    x[i : i + batch_size],
                    chosen[i : i + batch_size],
                    interpolate_mode,
                )
                for i in range(0, len(x), batch_size)
            ]
    finally:
        for module, training in flags.items():
            module.training = training
        for p, grad in zip(model.parameters(), saved_grads, strict=True):
            p.grad = grad
        if work is not model:
            for p in work.parameters():
                p.grad = None
    return _normalize(torch.cat(maps).numpy())


def _grad_cam(model: nn.Module, layer: nn.Module, x: Tensor, targets: Tensor, mode: str) -> Tensor:
    """Upsampled, ReLU'd Grad-CAM (B, H, W) of one batch."""
    cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
    if cam.ndim != 4:
        raise ValueError(
            f"the explained layer gives maps of shape {tuple(cam.shape)}; expected (B, 1, h, w) "
            "from a convolutional layer"
        )
    cam = LayerAttribution.interpolate(cam.detach().float(), tuple(x.shape[-2:]), mode)
    # Some interpolation modes (bicubic) overshoot below zero; negative evidence is dropped.
    return cam.clamp_min(0.0)[:, 0].contiguous()


def _targets(model: nn.Module, x: Tensor, targets, batch_size: int) -> Tensor:
    """The class to explain for each image, as a LongTensor (B,), checked against K."""
    with torch.no_grad():
        first = model(x[:batch_size])
    if first.ndim != 2:
        raise ValueError(f"model output has shape {tuple(first.shape)}; expected (B, K) logits")
    n_classes = first.shape[1]
    if targets is None:
        with torch.no_grad():
            rest = [model(x[i : i + batch_size]) for i in range(batch_size, len(x), batch_size)]
        return torch.cat([first, *rest]).argmax(dim=1)
    chosen = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
    if chosen.numel() == 1:
        chosen = chosen.expand(len(x))
    if chosen.shape != (len(x),):
        raise ValueError(
            f"targets must be one int or {len(x)} ints (one per image); got {chosen.numel()}"
        )
    outside = (chosen < 0) | (chosen >= n_classes)
    if outside.any():
        raise ValueError(
            f"target {int(chosen[outside][0])} out of range; expected 0..{n_classes - 1} "
            f"(the model has {n_classes} outputs)"
        )
    return chosen.contiguous()


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a torch.compile or DistributedDataParallel wrapper, whose layer
    names ("layer4") are the ones a caller knows."""
    for attribute in ("_orig_mod", "module"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def _layer_name(model: nn.Module, layer: nn.Module | str | None) -> str:
    """The dotted name of the layer to explain inside ``model``."""
    if layer is None:
        layer = DEFAULT_LAYER
    names = {module: name for name, module in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names or layer is model:
            raise ValueError(
                f"layer {type(layer).__name__} is not a submodule of the model; expected one "
                "of its modules or its name"
            )
        return names[layer]
    if layer not in names.values() or layer == "":
        raise ValueError(
            f"the model has no module named {layer!r}; expected a name from "
            "model.named_modules(), e.g. 'layer4' for a ResNet"
        )
    return layer


def _cpu_fp32(model: nn.Module) -> nn.Module:
    """``model`` itself if it is already on the CPU in float32, else a CPU float32 copy."""
    tensors = [*model.parameters(), *model.buffers()]
    floats = [t for t in tensors if t.is_floating_point()]
    if all(t.device.type == "cpu" for t in tensors) and all(
        t.dtype == torch.float32 for t in floats
    ):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 1, H, W); got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"images must have shape (B, 1, H, W) with B >= 1; got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point; got {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images hold NaN or infinite values; expected finite pixels")


def _normalize(maps: np.ndarray) -> np.ndarray:
    """Divide each (H, W) map by its maximum; an all-zero map stays zero."""
    peak = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0).astype(maps.dtype)
    return (maps / scale[:, None, None]).astype(np.float32)
