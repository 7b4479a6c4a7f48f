"""Training-time augmentation of whole batches, on the batch's own device.

A lensing image has no preferred orientation on the sky, so flips and rotations give new,
equally valid training images. Everything here works on a (N, C, H, W) tensor at once (one
``affine_grid`` + ``grid_sample`` call for the whole batch, ``flip``/``rot90`` for the exact
symmetries) instead of per image through PIL, so augmentation never starves the model. Random
draws come from a ``torch.Generator``, which makes a run repeatable and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lensing.core.constants import AUGMENTATIONS, canonical_augmentation

# The seed recipe's random transforms: flip, rotation, shift and zoom bounds.
MAX_ROTATION_DEG = 10.0  # rotation uniform in [-10, 10] degrees
MAX_TRANSLATION = 0.05  # shift uniform in [-5%, 5%] of the image side, per axis
SCALE_RANGE = (0.95, 1.05)  # zoom factor uniform in this range


def d4_views(x: Tensor) -> list[Tensor]:
    """The 8 images of the dihedral group D4: 4 rotations by 90 degrees, each unflipped and
    left-right flipped; the identity first.

    x: (N, C, H, W) with H == W. Returns 8 tensors of the same shape. These are exact pixel
    permutations (no interpolation), the symmetries of a square sky image.
    """
    _check_batch(x, square=True)
    views = []
    for flipped in (False, True):
        base = torch.flip(x, dims=(-1,)) if flipped else x
        views.extend(torch.rot90(base, k, dims=(-2, -1)) for k in range(4))
    return views


def augment_batch(x: Tensor, mode: str, generator: torch.Generator | None = None) -> Tensor:
    """A randomly transformed copy of a batch, each image with its own transform.

    x: (N, C, H, W) float tensor on any device. mode: "flip-affine" (random horizontal flip,
    rotation up to 10 degrees, shift up to 5 % and zoom 0.95-1.05, bilinear, zero fill, the seed
    notebook's recipe; "seed" is its old name), "d4" (one of the 8 exact flips/90-degree
    rotations per image; needs H == W) or "none" (x itself). generator: source of the random
    draws (a CPU generator works for a batch on any device); the same generator state gives the
    same output.
    """
    mode = canonical_augmentation(mode)
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation mode {mode!r}; expected one of {AUGMENTATIONS}")
    if mode == "none":
        return x
    _check_batch(x, square=mode == "d4")
    if mode == "d4":
        return _random_d4(x, generator)
    return _random_affine(x, generator)


def _check_batch(x: Tensor, square: bool) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected a batch of shape (N, C, H, W); got {shape}")
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"the D4 symmetries need square images; got H, W = {tuple(x.shape[-2:])}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _random_d4(x: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    choice = torch.randint(0, 8, (x.shape[0],), generator=generator, device=device).to(x.device)
    out = torch.empty_like(x)
    # Eight masked copies: each image goes through exactly one exact symmetry.
    for element, view in enumerate(_d4_lazy(x)):
        picked = (choice == element).nonzero(as_tuple=True)[0]
        if picked.numel():
            out[picked] = view(x[picked])
    return out


def _d4_lazy(x: Tensor):
    for flipped in (False, True):
        for k in range(4):
            if flipped:
                yield lambda t, k=k: torch.rot90(torch.flip(t, dims=(-1,)), k, dims=(-2, -1))
            else:
                yield lambda t, k=k: torch.rot90(t, k, dims=(-2, -1))


def _random_affine(x: Tensor, generator: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    flip = torch.where(_uniform(n, 0.0, 1.0, generator) < 0.5, -1.0, 1.0)
    angle = torch.deg2rad(_uniform(n, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, generator))
    scale = _uniform(n, *SCALE_RANGE, generator)
    # Normalized coordinates span [-1, 1], so a shift by a fraction f of the side is 2 f.
    shift = 2.0 * _uniform(2 * n, -MAX_TRANSLATION, MAX_TRANSLATION, generator).view(n, 2)
    theta = affine_matrices(flip, angle, scale, shift).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_matrices(flip: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """The (N, 2, 3) sampling matrices for ``F.affine_grid`` of the forward transform
    ``p -> scale * R(angle) @ diag(flip, 1) @ p + shift`` in normalized coordinates.

    flip: (N,) +1 or -1 (horizontal mirror), angle: (N,) radians, scale: (N,) zoom factor,
    shift: (N, 2) in normalized units (x, y). ``affine_grid`` wants, for every output pixel,
    where to read in the input, that is the inverse transform ``A^-1 (p - shift)``.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Inverse of scale * R(angle) * diag(flip, 1) is diag(flip, 1) * R(-angle) / scale.
    inverse = torch.stack(
        [
            torch.stack([flip * cos, flip * sin], dim=-1),
            torch.stack([-sin, cos], dim=-1),
        ],
        dim=-2,
    ) / scale.view(-1, 1, 1)
    offset = -(inverse @ shift.unsqueeze(-1))
    return torch.cat([inverse, offset], dim=-1)
