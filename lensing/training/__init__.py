"""Training: the optimizer and schedules, the steps, ``fit``, the recipes, pretraining.

- :mod:`~lensing.training.optim`: Adam with one group per layer group, the schedules;
- :mod:`~lensing.training.steps`: ``train_one_epoch`` and ``validate``;
- :mod:`~lensing.training.fit`: ``fit`` (set up, resume, loop, save);
- :mod:`~lensing.training.config`: ``TrainConfig``;
- :mod:`~lensing.training.recipes`: the named recipes and ``merge_options``;
- :mod:`~lensing.training.pretrain`: making the lensing weights (``pretrain_config``).

Re-exported from :mod:`lensing.model`: ``build_model``, ``prepare_model``, ``layer_groups``,
``load_checkpoint``, ``CheckpointError``.
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "fit": "fit",
    "load_datasets": "fit",
    "build_model": "lensing.model.network",
    "prepare_model": "lensing.model.network",
    "layer_groups": "lensing.model.network",
    "make_optimizer": "optim",
    "make_scheduler": "optim",
    "train_one_epoch": "steps",
    "validate": "steps",
    "CheckpointError": "lensing.model.checkpoint",
    "load_checkpoint": "lensing.model.checkpoint",
    "RECIPES": "recipes",
    "recipe_fields": "recipes",
    "merge_options": "recipes",
    "recipe_rates": "recipes",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
