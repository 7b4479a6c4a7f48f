"""Where and how the model runs: device, floating-point precision, autocast, and the
plain model behind a DistributedDataParallel or compiled wrapper."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from lensing.core.constants import PRECISIONS


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
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), so bf16 pays off.

    ``ONEDNN_MAX_CPU_ISA`` set to an instruction set without them (e.g. ``AVX2``, to make a
    newer CPU behave like an older one) counts as their absence: bf16 would then be emulated.
    """
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and not any(name in isa for name in ("AVX512_CORE_BF16", "AMX", "DEFAULT", "ALL")):
        return False
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


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel (``.module``) or ``torch.compile``
    (``._orig_mod``) wrapper; the model itself when it is not wrapped."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's weights as detached CPU tensors, with no wrapper's key prefix."""
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def plain_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict without the key prefixes torch.compile ("_orig_mod.") and DDP ("module.")
    add, so weights saved from a wrapped model load into a plain one."""
    plain = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        plain[key] = value
    return plain
