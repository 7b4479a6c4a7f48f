"""Paths, names and option values in one place. Functions take paths as arguments; defaults come
from here."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root; LENSING_ROOT moves every output folder elsewhere (tests, clusters).
PROJECT_ROOT = Path(os.environ.get("LENSING_ROOT", Path(__file__).resolve().parents[2]))
DATA_DIR = PROJECT_ROOT / "data"
REAL_DATA_DIR = DATA_DIR / "dataset"  # reserved for the real download (download_data.py)
SIMULATED_DATA_DIR = DATA_DIR / "simulated"  # default home of simulated sets
MODELS_DIR = PROJECT_ROOT / "models"
REPORTS_DIR = PROJECT_ROOT / "reports"
NOTEBOOK = PROJECT_ROOT / "notebooks" / "classification_notebook.ipynb"

CLASSES = ("no", "sphere", "vort")  # folder names, in label order
IMAGE_SIZE = 150  # pixels per side of every image
SPLITS = ("train", "val", "test")
LAYER_GROUPS = ("early", "middle", "late", "fc")  # one learning rate each
# The backbones: torchvision's ResNet18 (the seed's), and a ResNet of D4 group convolutions
# whose logits do not change when an image is turned by 90 degrees or flipped.
RESNET18, D4_RESNET = "resnet18", "d4-resnet"
MODELS = (RESNET18, D4_RESNET)
BATCH_SIZE = 64  # images per optimizer step: the default of training and pretraining
PREDICT_BATCH = 64  # files predict reads and classifies at once (bounds its memory)
MANIFEST = "manifest.json"  # written by the simulator; its presence marks a set as simulated

# Option values of training and search.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 where native, fp16 on old GPUs
# "flip-affine": the seed notebook's flip, small rotation, shift and zoom; "d4": the exact flips
# and 90-degree turns of a square image; "none".
AUGMENTATIONS = ("flip-affine", "d4", "none")
# Older names still accepted, so checkpoints and studies written with them resume.
AUGMENTATION_ALIASES = {"seed": "flip-affine"}
STRETCHES = ("none", "log", "arcsinh")  # input stretch before the network (lensing.data.stretch)
SCHEDULES = ("plateau", "onecycle")  # ReduceLROnPlateau per epoch, or one-cycle per step
PRUNE_MODES = ("none", "median", "halving")  # how the search stops weak combinations early


def canonical_augmentation(name: str) -> str:
    """The current name of an augmentation: an alias (``"seed"``) is mapped, others kept."""
    return AUGMENTATION_ALIASES.get(name, name)
