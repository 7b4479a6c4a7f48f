"""The package's own lensing weights: a ResNet18 pretrained on simulated lenses only.

``python -m lensing pretrain`` makes them (:mod:`lensing.training.pretrain`); the file ships
in ``lensing/model/weights/`` beside its model card (``MODEL_CARD.md``), in half precision.
``--pretrained lensing`` loads them, and ``imagenet`` falls back to them where ImageNet weights
cannot be had. The file's SHA-256 is checked on every load: a wrong hash is an error, never
a silent random start.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from lensing.core.atomic import atomic_write_bytes

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "lensing_resnet18.pth"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"
# SHA-256 of WEIGHTS_FILE as shipped (its model card gives the same).
WEIGHTS_SHA256 = "7b4e7324208defbc170ecd51cb8e84a6c5dd3199cc24db04e13a2efe7e93552e"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path) -> str:
    """Write a state_dict with its floating-point tensors in half precision, atomically;
    returns the file's SHA-256."""
    half = {
        name: tensor.half() if tensor.is_floating_point() else tensor
        for name, tensor in state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(half, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def weights_label(sha256: str = WEIGHTS_SHA256) -> str:
    """How results name these weights: ``lensing:<first 12 hex digits of the hash>``."""
    return f"lensing:{sha256[:12]}"


def load_lensing_weights(
    path: str | Path = WEIGHTS_FILE, sha256: str = WEIGHTS_SHA256
) -> dict[str, torch.Tensor]:
    """The shipped weights as a float32 state_dict, after checking the file's SHA-256.

    Raises ValueError when the file is missing or its hash is not ``sha256``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"the package's lensing weights are missing ({path}); reinstall the package, or "
            "make them with `python -m lensing pretrain` and pass --pretrained PATH"
        )
    found = sha256_of(path)
    if found != sha256:
        raise ValueError(
            f"the lensing weights {path} have SHA-256 {found}, expected {sha256}: the file is "
            "damaged or not the one this package ships; reinstall the package (no random start)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
