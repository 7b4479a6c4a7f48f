"""A search worker that trains each combination data-parallel under ``torchrun``.

``torchrun --nproc_per_node=N -m lensing search ...`` starts N processes. Rank 0 is the
search worker: it talks to the study, takes combinations, reports epochs and records the
result. Before each ``fit`` it sends the combination's TrainConfig to the other ranks
(``share_config``), and every rank then trains it together (``lensing.training.fit.fit`` under a
process group). The other ranks run ``follow``: they wait for a config, train it, and wait for
the next, until rank 0 sends None at the end of the search. Several such workers (one torchrun
per machine or per GPU set) share one study on a PostgreSQL server like plain workers.
"""

from __future__ import annotations

from pathlib import Path

from lensing.core import distributed
from lensing.data.dataset import load_splits
from lensing.model.checkpoint import CheckpointError
from lensing.training.fit import TrainConfig, fit


def share_config(config: TrainConfig | None) -> None:
    """Rank 0: hand the next combination's config (None: the search is over) to every rank."""
    distributed.broadcast_object(config)


def follow(data_dir: str | Path, in_memory: bool = True) -> int:
    """Ranks > 0: train every config rank 0 shares, until it shares None; returns how many."""
    datasets = load_splits(data_dir, in_memory=in_memory, progress=False)
    trained = 0
    while (config := distributed.broadcast_object(None)) is not None:
        try:
            fit(config, datasets, progress=False)
        except CheckpointError:
            # Rank 0 moves an unreadable checkpoint aside and shares the config again.
            continue
        trained += 1
    return trained
