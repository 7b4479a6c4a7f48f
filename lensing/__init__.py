"""Classify strong-lensing images by dark-matter substructure (no / sphere / vort).

The package, by role (each subpackage re-exports its public entry points):

- :mod:`lensing.data`: reading image files of every layout, the dataset and its cache,
  batches, augmentation, the input stretch, the real set's download;
- :mod:`lensing.training`: the model, optimizer and schedules, training steps, ``fit``,
  checkpoints, ``TrainConfig`` and the named recipes, torchrun;
- :mod:`lensing.evaluation`: inference, metrics, calibration, saliency, ``evaluate``,
  classifying new files, the figures;
- :mod:`lensing.search`: the resumable grid search and its dashboard;
- :mod:`lensing.simulate`: the lenstronomy stand-in for the real set;
- :mod:`lensing.cli`: ``python -m lensing COMMAND``;
- cross-cutting: :mod:`lensing.constants`, :mod:`lensing.runtime`, :mod:`lensing.atomic`,
  :mod:`lensing.progress`.

Subpackages load their modules on first use, so ``import lensing.simulate`` or
``python -m lensing --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from lensing.constants import CLASSES, DATA_DIR, MODELS_DIR, PROJECT_ROOT, REPORTS_DIR

__version__ = "0.1.0"
__all__ = ["CLASSES", "DATA_DIR", "MODELS_DIR", "PROJECT_ROOT", "REPORTS_DIR", "__version__"]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` on first use.

    ``exports`` maps each public name to the submodule (relative to ``package``) defining it.
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
