"""The classifier: a torchvision ResNet18 with a one-channel stem and three outputs.

Also the small device helpers every training and evaluation path shares: which device to use,
which floating-point precision to run in, and the autocast context that applies it.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from lensing.config import CLASSES, LAYER_GROUPS

# Top-level ResNet18 modules of each layer group (DESIGN.md, "Layer groups").
GROUP_MODULES = {
    "early": ("conv1", "bn1", "layer1"),
    "middle": ("layer2",),
    "late": ("layer3", "layer4"),
    "fc": ("fc",),
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Seconds without an answer before the ImageNet download is given up (a machine whose DNS
# resolves but whose traffic is dropped would otherwise hang for minutes).
DOWNLOAD_TIMEOUT_S = 15.0


def build_model(pretrained: str | Path = "imagenet", num_classes: int = len(CLASSES)) -> nn.Module:
    """A ResNet18 for (N, 1, H, W) images with ``num_classes`` logits; every layer trainable.

    Parameters
    ----------
    pretrained : "imagenet", "none" or a path to a weights file.
        "imagenet": torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (from the torch hub cache,
        else downloaded). When they cannot be had (no network) the model keeps its random
        initialization and a warning says so. "none": random initialization. A path: a
        torchvision resnet18 state_dict (3-channel conv1, converted like the ImageNet weights),
        or a checkpoint written by ``lensing.train`` (its ``model`` entry).
        In every case the final layer is new unless the file's fc already has
        ``num_classes`` outputs.
    num_classes : int, number of output logits.

    Returns
    -------
    nn.Module with attribute ``is_pretrained: bool``, True only when weights were really loaded,
    so results can be labelled honestly.

    Why the one-channel kernels are the sum over RGB: ImageNet weights see three channels. A
    grey image replicated into R, G and B gives ``sum_c w_c * x = (sum_c w_c) * x``, so the
    summed kernel applied to the single channel reproduces the pretrained network's activations
    exactly, at a third of the first layer's cost. The images are fed in [0, 1] without
    ImageNet's per-channel mean/std; bn1 right after conv1 re-normalizes, and every layer is
    fine-tuned anyway.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes!r}")
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # Same initialization torchvision gives its own convolutions.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")

    source = str(pretrained)
    if source == "none":
        model.is_pretrained = False
    elif source == "imagenet":
        state = _imagenet_state_dict()
        if state is None:
            model.is_pretrained = False
        else:
            _load_weights(model, state, "torchvision ImageNet weights")
            model.is_pretrained = True
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(
                f"pretrained={source!r} is neither 'imagenet', 'none' nor an existing file"
            )
        _load_weights(model, _read_weights_file(path), str(path))
        model.is_pretrained = True
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _imagenet_state_dict() -> dict[str, torch.Tensor] | None:
    """ImageNet ResNet18 weights from the hub cache or the network; None (and a warning) if not."""
    weights = ResNet18_Weights.IMAGENET1K_V1
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        # Looks in torch.hub.get_dir()/checkpoints first, so a cached file needs no network.
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        message = (
            f"could not get ImageNet weights for ResNet18 ({weights.url}): {error}. "
            "Falling back to RANDOM initialization; results are labelled pretrained=False. "
            "To use them offline, put resnet18-f37072fd.pth into "
            f"{torch.hub.get_dir()}/checkpoints or pass pretrained=PATH."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        print(f"WARNING: {message}", file=sys.stderr, flush=True)
        return None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a foreign or truncated file
        raise ValueError(
            f"cannot read weights file {path}: {error}; expected a torch state_dict of resnet18"
        ) from error
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a checkpoint written by lensing.train
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
    state = {_strip_prefix(k): v for k, v in state.items()}
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


def _strip_prefix(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's parameters split into the layer groups early, middle, late and fc.

    Each parameter is in exactly one group; a parameter outside the known modules is an error
    rather than silently left out of the optimizer. A DistributedDataParallel wrapper is looked
    through.
    """
    model = getattr(model, "module", model)
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


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: cuda if available, then mps, then cpu; otherwise the named device, checked."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(
            f"unknown device {name!r}; expected auto, cpu, cuda[:N] or mps"
        ) from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for but MPS is not available here")
    return chosen


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), so bf16 pays off."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run in: "fp32", "bf16" or "fp16".

    "auto" gives bf16 on CPUs with native bf16 and on CUDA devices that support it, fp16 on
    older CUDA devices, and fp32 elsewhere (MPS included). An explicit choice the device cannot
    run is an error.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if kind == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device; got {kind!r} (use bf16 or fp32)")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``precision`` ("fp32", "bf16", "fp16") on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
    return torch.autocast(device_type=torch.device(device).type, dtype=dtypes[precision])
