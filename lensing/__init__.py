"""Classify strong-lensing images by dark-matter substructure (no / sphere / vort).

The package in layers; a layer imports only from the layers below it (the layout test checks):

1. :mod:`lensing.core`: constants, runtime, torchrun helpers, RNG, metrics, image
   statistics, atomic files, progress;
2. :mod:`lensing.data`: reading image files of every layout, the dataset and its cache,
   batches, augmentation, the input stretch, the training-data profile, the real set's
   download;
3. :mod:`lensing.simulate`: the lenstronomy stand-in for the real set;
4. :mod:`lensing.model`: ResNet18 and its layer groups, the lensing weights, checkpoints,
   inference;
5. :mod:`lensing.training` and :mod:`lensing.evaluation`, side by side (neither imports the
   other): fitting and pretraining; metrics files, calibration, saliency, figures, ``predict``;
6. :mod:`lensing.search`: the resumable grid search and its dashboard;
7. :mod:`lensing.cli`: ``python -m lensing COMMAND``, and which data folder a run uses.

Subpackages load their modules on first use, so ``import lensing.simulate`` or
``python -m lensing --help`` does not import torch.
"""

from __future__ import annotations

from lensing.core.constants import CLASSES, DATA_DIR, MODELS_DIR, PROJECT_ROOT, REPORTS_DIR

__version__ = "0.1.0"
__all__ = ["CLASSES", "DATA_DIR", "MODELS_DIR", "PROJECT_ROOT", "REPORTS_DIR", "__version__"]
