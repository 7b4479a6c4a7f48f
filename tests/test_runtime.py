"""Runtime helpers: device choice, precision, autocast, unwrapping wrapped models."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from lensing.core.runtime import (
    autocast,
    cpu_has_native_bf16,
    cpu_state_dict,
    pick_device,
    plain_state_dict,
    resolve_precision,
    unwrap,
)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def cpuinfo_has_native_bf16() -> bool:
    """Whether the kernel lists AVX512-BF16 or AMX among the CPU's flags (/proc/cpuinfo): a
    source of its own, not the torch/cpuinfo probe ``cpu_has_native_bf16`` asks."""
    cpuinfo = Path("/proc/cpuinfo")
    if not sys.platform.startswith("linux") or not cpuinfo.is_file():
        pytest.skip("needs /proc/cpuinfo to know the CPU's flags independently")
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    return bool({"avx512_bf16", "amx_tile"} & flags)


def test_native_bf16_and_auto_precision_follow_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = cpuinfo_has_native_bf16()
    cpu = torch.device("cpu")
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    # An ISA cap that keeps the bf16 instructions changes nothing.
    for isa in ("AVX512_CORE_AMX", "avx512_core_bf16", "ALL", "DEFAULT"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        assert cpu_has_native_bf16() is native, isa
        assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32"), isa


@pytest.mark.parametrize("isa", ["AVX2", "avx512_core", "SSE41", "AVX512_CORE_VNNI"])
def test_an_isa_cap_without_bf16_makes_auto_pick_fp32(monkeypatch, isa):
    # oneDNN then emulates bf16, slower than fp32: auto must not choose it, whatever the CPU.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert cpu_has_native_bf16() is False
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: given


def test_resolve_precision_and_autocast():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp64", cpu)
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="unknown precision"):
            autocast(cpu, "int8")


def test_unwrap_and_plain_state_dict_look_through_wrappers():
    inner = nn.Linear(2, 3)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = inner

    assert unwrap(Wrapper()) is inner
    assert unwrap(inner) is inner
    assert set(cpu_state_dict(Wrapper())) == {"weight", "bias"}
    prefixed = {"module.weight": inner.weight, "_orig_mod.bias": inner.bias}
    assert set(plain_state_dict(prefixed)) == {"weight", "bias"}
