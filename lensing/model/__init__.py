"""The network and its files: building ResNet18 with its layer groups, the package's lensing
weights, checkpoints (written whole, read with their contract checked), and running a model
over images (inference, with D4 test-time averaging).

- :mod:`~lensing.model.network`: ``build_model``, ``build_like``, ``prepare_model``,
  ``layer_groups``;
- :mod:`~lensing.model.lensing_weights`: the shipped weights, their hash and label;
- :mod:`~lensing.model.checkpoint`: ``save_checkpoint``, ``load_checkpoint``,
  ``CheckpointError``;
- :mod:`~lensing.model.inference`: ``predict_split``, ``load_trained_model``.
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "build_model": "network",
    "build_like": "network",
    "prepare_model": "network",
    "layer_groups": "network",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "predict_split": "inference",
    "load_trained_model": "inference",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
