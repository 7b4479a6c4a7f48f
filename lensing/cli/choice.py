"""Which data folder a run uses: the real set once downloaded, otherwise the simulated one.

The real set counts as present when ``data/dataset`` holds ``train/`` and ``val/``, the two
splits ``download_data.py`` unpacks. Simulated sets never go into ``data/dataset``.
"""

from __future__ import annotations

from pathlib import Path

from lensing.core import constants


def real_data_present() -> bool:
    """True when the real set has been unpacked into ``data/dataset``."""
    real = constants.REAL_DATA_DIR
    return (real / "train").is_dir() and (real / "val").is_dir()


def default_data_dir() -> Path:
    """The real set when it is present, else the default simulated set (made or not)."""
    return constants.REAL_DATA_DIR if real_data_present() else constants.SIMULATED_DATA_DIR


def choose_data(simulate_counts: dict[str, int], seed: int = 0) -> Path:
    """The real set when it is present; otherwise the default simulated set, written first if
    it is missing or incomplete (``simulate_counts``: images per class of each split)."""
    if real_data_present():
        print(f"Using the real data set in {constants.REAL_DATA_DIR}.")
        return constants.REAL_DATA_DIR
    simulated = constants.SIMULATED_DATA_DIR
    print(
        f"No real data in {constants.REAL_DATA_DIR} (get it with `python download_data.py`).\n"
        f"Using a SIMULATED stand-in in {simulated}: {simulate_counts} images per "
        "class; results are labelled 'simulated'."
    )
    from lensing.simulate import simulate_dataset  # lenstronomy, only when simulating

    simulate_dataset(simulated, simulate_counts, seed=seed)
    return simulated
