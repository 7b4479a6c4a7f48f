"""Named training recipes: a set of TrainConfig values chosen together.

``--recipe NAME`` (train, search) and the notebook's ``recipe`` parameter start from one of
these; any option given explicitly overrides the recipe's value.

- ``"default"``: the package's defaults, chosen by measurement (the README's Performance
  section): the 8 exact flips and quarter turns (``d4``), a one-cycle schedule, every layer
  group at 1e-3, no input stretch.
- ``"seed-notebook"``: the recipe the project started from: the seed notebook's random flip,
  small rotation, shift and zoom (``flip-affine``), ReduceLROnPlateau on the validation AUC,
  no input stretch, and its per-group learning rates.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "seed-notebook": {
        "augment": "flip-affine",
        "schedule": "plateau",
        "stretch": "none",
        "lr_early": 1e-4,
        "lr_middle": 3e-4,
        "lr_late": 1e-3,
        "lr_fc": 1e-3,
    },
}


def recipe_fields(name: str) -> dict[str, Any]:
    """The TrainConfig values of recipe ``name``."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
    return dict(RECIPES[name])
