"""The classifier: a torchvision ResNet18 with a one-channel stem and three outputs (or the D4
ResNet of :mod:`lensing.model.equivariant`), its layer groups, and its placement on a device
(memory layout, DistributedDataParallel wrapper)."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from lensing.core import distributed
from lensing.core.constants import CLASSES, D4_RESNET, LAYER_GROUPS, MODELS, RESNET18
from lensing.core.runtime import plain_state_dict, unwrap
from lensing.model.equivariant import build_equivariant, widths_of
from lensing.model.lensing_weights import load_lensing_weights, weights_label

# Top-level ResNet18 modules of each layer group; each group gets its own learning rate.
GROUP_MODULES = {
    "early": ("conv1", "bn1", "layer1"),
    "middle": ("layer2",),
    "late": ("layer3", "layer4"),
    "fc": ("fc",),
}
# Seconds without an answer before the ImageNet download is given up (a machine whose DNS
# resolves but whose traffic is dropped would otherwise hang for minutes).
DOWNLOAD_TIMEOUT_S = 15.0
# Why this process has no ImageNet weights, once it has found out (None: not failed yet).
_imagenet_failure: str | None = None
# Backbones this process has said it starts from random weights (no pretrained ones exist).
_said_random: set[str] = set()


def build_model(
    pretrained: str | Path = "imagenet", num_classes: int = len(CLASSES), model: str = RESNET18
) -> nn.Module:
    """A ResNet18 (or ``model``) for (N, 1, H, W) images with ``num_classes`` logits; every
    layer trainable.

    Parameters
    ----------
    pretrained : "imagenet", "lensing", "none" or a path to a weights file.
        "imagenet": torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (from the torch hub cache,
        else downloaded). When they cannot be had (no network) the package's lensing weights
        are used instead, and a message on stderr says so, once per process. "lensing": the
        package's own weights, pretrained on simulated lenses only
        (:mod:`lensing.model.lensing_weights`; their hash is checked). "none": random
        initialization. A path: a torchvision resnet18 state_dict (3-channel conv1, converted
        like the ImageNet weights), or a checkpoint written by ``lensing.training.fit``
        (its ``model`` entry). In every case the final layer is new unless the weights' fc
        already has ``num_classes`` outputs.
    num_classes : int, number of output logits.
    model : "resnet18" or "d4-resnet" (:data:`lensing.core.constants.MODELS`). No pretrained
        weights exist for "d4-resnet": "imagenet" starts it from random weights and says so
        once, "lensing" (ResNet18's) is an error, a path must hold a d4-resnet's weights.

    Returns
    -------
    nn.Module with attributes ``is_pretrained: bool``, True only when weights were really
    loaded, and ``weights: str``, the weights it started from ("imagenet", "lensing:<hash>",
    "none" or the path), so results can be labelled honestly.

    Why the one-channel kernels are the sum over RGB: ImageNet weights see three channels. A
    grey image replicated into R, G and B gives ``sum_c w_c * x = (sum_c w_c) * x``, so the
    summed kernel applied to the single channel reproduces the pretrained network's activations
    exactly, at a third of the first layer's cost. The images are fed in [0, 1] without
    ImageNet's per-channel mean/std; bn1 right after conv1 re-normalizes, and every layer is
    fine-tuned anyway.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes!r}")
    if model not in MODELS:
        raise ValueError(f"model {model!r}; expected one of {', '.join(MODELS)}")
    if model == D4_RESNET:
        return _build_d4(str(pretrained), num_classes)
    return _build_resnet18(str(pretrained), num_classes)


def _build_resnet18(source: str, num_classes: int) -> nn.Module:
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # Same initialization torchvision gives its own convolutions.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")

    model.is_pretrained, model.weights = True, source
    state = _imagenet_state_dict() if source == "imagenet" else None
    if source == "none":
        model.is_pretrained = False
    elif source == "imagenet" and state is not None:
        _load_weights(model, state, "torchvision ImageNet weights")
    elif source in ("imagenet", "lensing"):
        _load_weights(model, load_lensing_weights(), "the package's lensing weights")
        model.weights = weights_label()
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(
                f"pretrained={source!r} is neither 'imagenet', 'lensing', 'none' nor an "
                "existing file"
            )
        _load_weights(model, _read_weights_file(path), str(path))
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def build_like(
    weights: Mapping[str, torch.Tensor], num_classes: int = len(CLASSES), model: str = RESNET18
) -> nn.Module:
    """A randomly initialized ``model`` (as ``build_model("none", ...)``) shaped to take the
    state dict ``weights``: a d4-resnet gets the widths its weights have, so checkpoints of
    other widths (those before the default became (10, 20, 40, 80) have (12, 24, 48, 96)) load."""
    if model == D4_RESNET:
        return build_equivariant(num_classes, widths_of(weights))
    return build_model("none", num_classes, model)


def _build_d4(source: str, num_classes: int) -> nn.Module:
    """A D4 ResNet: random weights (the default widths), or those of a file written for one
    (its widths)."""
    if source == "lensing":
        raise ValueError(
            "the package's lensing weights are ResNet18's; a d4-resnet starts from random "
            "weights (--pretrained none) or from a d4-resnet weights file"
        )
    if source in ("none", "imagenet"):
        if source == "imagenet" and D4_RESNET not in _said_random:
            _said_random.add(D4_RESNET)
            print(
                "NOTE: no pretrained weights exist for d4-resnet: it starts from random "
                "weights (the results say weights 'none').",
                file=sys.stderr,
                flush=True,
            )
        return build_equivariant(num_classes)
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"pretrained={source!r} is neither 'none' nor an existing file")
    weights = plain_state_dict(_read_weights_file(path))
    model = build_like(weights, num_classes, D4_RESNET)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"{path} does not hold d4-resnet weights: {error}") from error
    model.is_pretrained, model.weights = True, str(path)
    return model


def _imagenet_state_dict() -> dict[str, torch.Tensor] | None:
    """ImageNet ResNet18 weights from the torch hub cache, else downloaded into it; None when
    they cannot be had, said once per process.

    The cache is looked at first, so an offline machine with the file needs no network. The
    download goes through ``torch.hub.download_url_to_file`` directly, without a progress bar:
    torch's own loader prints ``Downloading: ...`` before it knows whether the download will
    work, which reads as a success on a machine that has no network. After one failure the
    process does not try again (each search trial would otherwise wait for the timeout and
    repeat the same message); its models are labelled ``is_pretrained=False``.
    """
    global _imagenet_failure
    weights = ResNet18_Weights.IMAGENET1K_V1
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / Path(urlparse(weights.url).path).name
    if not cached.is_file():
        if _imagenet_failure is not None:
            return None  # already reported in this process
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # The file name carries the first digits of its SHA-256; a mismatch is an error.
            digest = re.search(r"-([0-9a-f]{8,})\.", cached.name)
            torch.hub.download_url_to_file(
                weights.url, str(cached), digest.group(1) if digest else None, progress=False
            )
        except (OSError, RuntimeError, ValueError) as error:
            _report_missing_weights(f"download from {weights.url} failed: {error}", cached)
            return None
        finally:
            socket.setdefaulttimeout(previous_timeout)
        print(f"Downloaded the ImageNet ResNet18 weights to {cached}")
    try:
        return torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        if _imagenet_failure is None:
            _report_missing_weights(f"the cached file cannot be read: {error}", cached)
        return None


def _report_missing_weights(reason: str, cached: Path) -> None:
    """Say once, in plain words, that training starts from the lensing weights instead, and
    how to have ImageNet's."""
    global _imagenet_failure
    _imagenet_failure = reason
    print(
        f"NOTE: no ImageNet weights for ResNet18 ({reason}), so models start from the "
        f"package's LENSING weights ({weights_label()}, pretrained on simulated lenses only) "
        "instead; results name them. For ImageNet weights: run once with network access, "
        f"or copy {cached.name} into {cached.parent}. --pretrained none starts from random "
        "weights.",
        file=sys.stderr,
        flush=True,
    )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a foreign or truncated file
        raise ValueError(
            f"cannot read weights file {path}: {error}; expected a torch state_dict of resnet18"
        ) from error
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a checkpoint written by lensing.training.fit
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"weights file {path} holds a {type(obj).__name__}; expected a resnet18 state_dict "
            "(names -> tensors) or a lensing checkpoint with a 'model' entry"
        )
    return obj


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a resnet18 state_dict into ``model``: RGB conv1 summed to one channel, fc kept new
    when its size differs."""
    # Weights saved from a DistributedDataParallel or torch.compile wrapper carry a prefix.
    state = plain_state_dict(state)
    conv1 = state.get("conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] == 3:
        state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
    fc_weight = state.get("fc.weight")
    new_fc = fc_weight is not None and fc_weight.shape != model.fc.weight.shape
    if new_fc:
        state.pop("fc.weight")
        state.pop("fc.bias", None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source} does not fit a one-channel ResNet18: {error}") from error
    allowed_missing = {"fc.weight", "fc.bias"} if new_fc else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(
            f"{source} does not hold ResNet18 weights: missing {sorted(set(missing))[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's parameters split into the layer groups early, middle, late and fc.

    Each parameter is in exactly one group; a parameter outside the known modules is an error
    rather than silently left out of the optimizer. A DistributedDataParallel wrapper is looked
    through.
    """
    model = unwrap(model)
    owner = {module: group for group, modules in GROUP_MODULES.items() for module in modules}
    groups: dict[str, list[nn.Parameter]] = {group: [] for group in LAYER_GROUPS}
    for name, parameter in model.named_parameters():
        top = name.split(".", 1)[0]
        if top not in owner:
            raise ValueError(
                f"parameter {name!r} belongs to no layer group; expected it under one of "
                f"{sorted(owner)}"
            )
        groups[owner[top]].append(parameter)
    return groups


def prepare_model(
    model: nn.Module,
    device: torch.device,
    channels_last: bool = True,
    *,
    data_parallel: bool | None = None,
    compile_model: bool = False,
) -> nn.Module:
    """The model on ``device`` in its memory layout: the one place where it gets wrapped.

    data_parallel: wrap it in DistributedDataParallel (gradients averaged over the ranks at
        each backward pass, rank 0's weights copied to every rank here); None: when a
        process group of more than one process is initialized. The plain model is then
        ``lensing.core.runtime.unwrap(model)``.
    compile_model: wrap it in ``torch.compile`` (last, so DDP's hooks are traced with it).
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
    if compile_model:
        model = torch.compile(model)
    return model
