"""Runtime helpers: device choice, precision, autocast, unwrapping wrapped models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lensing.runtime import (
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


def test_resolve_precision_and_autocast():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
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
