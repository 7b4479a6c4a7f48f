"""The input stretch: how pixel values in [0, 1] are mapped before the network sees them.

Lensing images are dominated by a dim sky with a few bright knots; a compressive stretch
lifts the faint arcs, where substructure leaves its trace, relative to the knots. The stretch
is part of a model: it is saved in the checkpoint's config, and evaluation and prediction
apply the one the model was trained with.

- ``"none"``: x unchanged.
- ``"log"``: ``log1p(a x) / log1p(a)`` with ``a = STRETCH_SCALE``; 0 -> 0 and 1 -> 1.
- ``"arcsinh"``: ``arcsinh(a x) / arcsinh(a)``; the same ends, linear near 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lensing.core.constants import STRETCHES

STRETCH_SCALE = 100.0  # a: how strongly faint values are lifted (x = 0.01 -> 0.15 under log)


def apply_stretch(images: torch.Tensor, stretch: str) -> torch.Tensor:
    """``images`` (any shape, values in [0, 1]) under ``stretch``; same shape and dtype."""
    if stretch == "none":
        return images
    a = STRETCH_SCALE
    if stretch == "log":
        return torch.log1p(images * a) / math.log1p(a)
    if stretch == "arcsinh":
        return torch.asinh(images * a) / math.asinh(a)
    raise ValueError(f"unknown stretch {stretch!r}; expected one of {STRETCHES}")


def stretch_of(state: dict[str, Any]) -> str:
    """The stretch a checkpoint's model was trained with ("none" for older checkpoints)."""
    config = state.get("config") or {}
    return str(config.get("stretch", "none")) if isinstance(config, dict) else "none"
