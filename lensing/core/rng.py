"""Random states: seeding a run, saving every generator it draws from, and putting them back.

A resumed run continues with the exact random states its last finished epoch left, so on a CPU
with a fixed seed it gives the same history as a run never interrupted. Under torchrun each
rank keeps its own augmentation stream.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from lensing.core import distributed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators (code may draw from any of them)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state, for code that still uses it)
    torch.manual_seed(seed)


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from, as tensors, lists and numbers (weights_only-safe)."""
    # The legacy global NumPy state is saved because libraries may draw from it.
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, mt_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": _cuda_rng_states(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what ``capture_rng`` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        world = distributed.current()
        if world.distributed:
            cuda = state["cuda"]
            torch.cuda.set_rng_state(cuda[world.local_rank] if len(cuda) > 1 else cuda[0])
        else:
            torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def _cuda_rng_states() -> list[torch.Tensor]:
    if not torch.cuda.is_available():
        return []
    # One rank per GPU: touching the other GPUs would open a context on each of them.
    if distributed.current().distributed:
        return [torch.cuda.get_rng_state()]
    return torch.cuda.get_rng_state_all()


def augment_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """Seed of a rank's augmentation generator; rank 0 of a fresh run keeps ``seed + 1``.

    Each rank draws its own augmentations: the same stream on every rank would give the
    images at one batch position the same rotation and shift on every rank.
    """
    if rank == 0 and epoch == 0:
        return seed + 1
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def restore_rng(
    state: dict[str, Any], generators: dict[str, torch.Generator], seed: int, epoch: int
) -> None:
    """Each rank's own RNG states when the world size is unchanged; else rank 0's.

    Rank 0's states carry the data order, which every rank shares; the other ranks'
    augmentation generators are then seeded afresh from (seed, rank, epoch).
    """
    world = distributed.current()
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == world.world_size:
        set_rng(per_rank[world.rank], generators)
        return
    set_rng(state["rng"], generators)
    if world.rank > 0:
        generators["augment"].manual_seed(augment_seed(seed, world.rank, epoch))
