"""Paths and constants in one place. Functions take paths as arguments; defaults come from here."""

import os
from pathlib import Path

# The repository root; LENSING_ROOT moves every output folder elsewhere (tests, clusters).
PROJECT_ROOT = Path(os.environ.get("LENSING_ROOT", Path(__file__).resolve().parent.parent))
DATA_DIR = PROJECT_ROOT / "data"
REAL_DATA_DIR = DATA_DIR / "dataset"  # reserved for the real download (download_data.py)
SIMULATED_DATA_DIR = DATA_DIR / "simulated"  # default home of simulated sets
MODELS_DIR = PROJECT_ROOT / "models"
REPORTS_DIR = PROJECT_ROOT / "reports"
FIGURES_DIR = REPORTS_DIR / "figures"
NOTEBOOK = PROJECT_ROOT / "notebooks" / "classification_notebook.ipynb"

CLASSES = ("no", "sphere", "vort")  # folder names, in label order
IMAGE_SIZE = 150  # pixels per side of every image
SPLITS = ("train", "val", "test")
LAYER_GROUPS = ("early", "middle", "late", "fc")  # one learning rate each
MANIFEST = "manifest.json"  # written by the simulator; its presence marks a set as simulated
