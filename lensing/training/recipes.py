"""Named training recipes: a set of TrainConfig values chosen together.

``--recipe NAME`` (train, search) and the notebook's ``recipe`` parameter start from one of
these; any option given explicitly overrides the recipe's value. Both go through
:func:`merge_options`, so the command line and the notebook build the same run.

- ``"default"``: the package's defaults, chosen by measurement: the 8 exact flips and quarter
  turns (``d4``), a one-cycle schedule, no input stretch (docs/benchmarks.md, Performance), and
  per-group rates for fine-tuning pretrained weights, 1e-5 / 1e-4 / 3e-4 / 1e-3 for early /
  middle / late / fc (docs/pretraining.md, Transfer).
- ``"from-scratch"``: the default with every group at 1e-3, the rate measured best from random
  weights (``--pretrained none``; docs/simulated-data.md). ``"default"`` takes these rates
  itself when the network starts from random weights: ``pretrained="none"``, or a d4-resnet
  without a weights file (none are pretrained), since rates of 1e-5 for early layers leave a
  random network's first layers nearly where they started (``starts_random``).
- ``"seed-notebook"``: the recipe the project started from: the seed notebook's random flip,
  small rotation, shift and zoom (``flip-affine``), ReduceLROnPlateau on the validation AUC,
  no input stretch, and its per-group learning rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lensing.core.constants import D4_RESNET, LAYER_GROUPS
from lensing.training.config import TrainConfig

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "from-scratch": {"lr_early": 1e-3, "lr_middle": 1e-3, "lr_late": 1e-3, "lr_fc": 1e-3},
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


def merge_options(
    recipe: str, options: Mapping[str, Any], *, with_rates: bool = True
) -> dict[str, Any]:
    """The TrainConfig fields of one run: recipe ``recipe``'s, then every option that is set.

    options: TrainConfig field -> value; ``None`` means "not given" and keeps the recipe's
        value (or, where the recipe has none, TrainConfig's default).
    with_rates: False drops the learning rates (``lr_<group>``), which a search's grid sets.
    """
    fields = recipe_fields(recipe)
    given = {name: value for name, value in options.items() if value is not None}
    if recipe == "default" and starts_random(given):
        fields = recipe_fields("from-scratch")
    fields |= given
    if not with_rates:
        for group in LAYER_GROUPS:
            fields.pop(f"lr_{group}", None)
    return fields


def starts_random(fields: Mapping[str, Any]) -> bool:
    """Whether a run of TrainConfig ``fields`` starts from random weights: ``pretrained``
    "none", or a d4-resnet (no pretrained weights exist for it) unless ``pretrained`` names a
    weights file (anything but "imagenet", "lensing" and "none")."""
    pretrained = str(
        fields.get("pretrained") or TrainConfig.__dataclass_fields__["pretrained"].default
    )
    if pretrained == "none":
        return True
    return fields.get("model") == D4_RESNET and pretrained in ("imagenet", "lensing")


def recipe_rates(name: str) -> dict[str, float]:
    """The learning rate of each layer group under recipe ``name`` (group -> rate)."""
    fields = recipe_fields(name)
    defaults = TrainConfig.__dataclass_fields__
    return {g: fields.get(f"lr_{g}", defaults[f"lr_{g}"].default) for g in LAYER_GROUPS}
