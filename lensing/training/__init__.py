"""Training: the model, its optimizer and schedules, the steps, ``fit``, checkpoints.

- :mod:`~lensing.training.model`: ResNet18 with a one-channel input and its layer groups;
- :mod:`~lensing.training.optim`: Adam with one group per layer group, the schedules;
- :mod:`~lensing.training.steps`: ``train_one_epoch`` and ``validate``;
- :mod:`~lensing.training.fit`: ``fit`` (set up, resume, loop, save);
- :mod:`~lensing.training.checkpoint`: file names, loading, RNG states, ``Checkpointer``;
- :mod:`~lensing.training.config`: ``TrainConfig``;
- :mod:`~lensing.training.recipes`: the named recipes and ``merge_options``;
- :mod:`~lensing.training.distributed`: torchrun (process group, shards, collectives).
"""

from lensing import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "fit": "fit",
    "load_datasets": "fit",
    "build_model": "model",
    "prepare_model": "model",
    "layer_groups": "model",
    "make_optimizer": "optim",
    "make_scheduler": "optim",
    "train_one_epoch": "steps",
    "validate": "steps",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "RECIPES": "recipes",
    "recipe_fields": "recipes",
    "merge_options": "recipes",
    "recipe_rates": "recipes",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
