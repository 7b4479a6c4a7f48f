"""A package's public names, imported on first use (so ``import lensing.simulate`` or
``python -m lensing --help`` does not import torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` on first use.

    ``exports`` maps each public name to the module defining it: a submodule of ``package``
    (``"dataset"``), or a full name (``"lensing.model.network"``) for a name re-exported from
    a lower layer.
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        if not module.startswith("lensing."):
            module = f"{package}.{module}"
        return getattr(importlib.import_module(module), name)

    return __getattr__
