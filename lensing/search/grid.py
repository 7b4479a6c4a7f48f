"""The grid of a search: its file format, its checks, and one combination of it (:class:`Combo`).

A grid file is a JSON object with one list of learning rates per layer group, e.g.
``{"early": [1e-5, 1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}``. The groups
are those of :data:`lensing.core.constants.LAYER_GROUPS`: early (conv1, bn1, layer1), middle
(layer2), late (layer3, layer4) and fc (the new 3-class head); each needs at least one rate. The
search trains every combination: one rate per group, the product of the lists.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lensing.core.constants import LAYER_GROUPS

DEFAULT_GRID: dict[str, list[float]] = {
    "early": [1e-5, 1e-4],  # conv1, bn1, layer1: pretrained features, moved gently
    "middle": [1e-4],  # layer2
    "late": [1e-4, 1e-3],  # layer3, layer4
    "fc": [1e-3],  # the new 3-class head
}  # 4 combinations: small enough for a CPU; pass --grid FILE.json for a wider search


@dataclasses.dataclass(frozen=True, order=True)
class Combo:
    """One learning rate per layer group: one combination of a grid, one trial folder.

    The Optuna parameter names and the TrainConfig fields are the same (``lr_early``, ...), so
    :attr:`params` serves both. The folder key is ``early=1e-05_middle=0.0001_late=0.0001_fc=
    0.001`` (Python's shortest round-trip float): trial folders already on disk use it.
    """

    early: float
    middle: float
    late: float
    fc: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Combo:
        """From ``lr_<group>`` names (Optuna params, TrainConfig fields) or bare group names."""
        rates = {name.removeprefix("lr_"): value for name, value in params.items()}
        missing = [group for group in LAYER_GROUPS if group not in rates]
        if missing:
            raise KeyError(
                f"learning rates {dict(params)!r} lack {', '.join(missing)}; expected one for "
                f"each of {', '.join(LAYER_GROUPS)}"
            )
        return cls(*(float(rates[group]) for group in LAYER_GROUPS))

    @classmethod
    def from_key(cls, key: str) -> Combo:
        """The combination a folder key names (the inverse of :attr:`key`)."""
        try:
            pairs = dict(part.split("=", 1) for part in key.split("_"))
            return cls.from_params({name: float(value) for name, value in pairs.items()})
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"trial folder name {key!r}: expected the form "
                f"{Combo(1e-5, 1e-4, 1e-4, 1e-3).key!r} ({err})"
            ) from None

    @property
    def rates(self) -> dict[str, float]:
        """``{group: learning rate}`` in LAYER_GROUPS order."""
        return {group: getattr(self, group) for group in LAYER_GROUPS}

    @property
    def params(self) -> dict[str, float]:
        """``{"lr_<group>": rate}``: the Optuna params and the TrainConfig learning rates."""
        return {f"lr_{group}": rate for group, rate in self.rates.items()}

    @property
    def key(self) -> str:
        """The trial folder's name, stable across runs and machines."""
        return "_".join(f"{group}={rate!r}" for group, rate in self.rates.items())

    def __iter__(self) -> Iterator[float]:
        return iter(self.rates.values())


def trial_key(params: Mapping[str, Any]) -> str:
    """The folder name of a combination given as ``lr_<group>`` or bare group names."""
    return Combo.from_params(params).key


def grid_combos(grid: Mapping[str, list[float]]) -> list[Combo]:
    """Every combination of a (validated) grid, in a fixed order."""
    return [Combo(*rates) for rates in itertools.product(*(grid[g] for g in LAYER_GROUPS))]


def grid_size(grid: Mapping[str, list[float]]) -> int:
    """Number of learning-rate combinations in a grid."""
    return math.prod(len(values) for values in grid.values())


def search_space(grid: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """The grid as Optuna parameter lists, ``{"lr_<group>": [...]}``."""
    return {f"lr_{group}": list(grid[group]) for group in LAYER_GROUPS}


def validate_grid(grid: Mapping[str, Any], source: str = "grid") -> dict[str, list[float]]:
    """Check a grid and return it normalized: groups in LAYER_GROUPS order, each list of learning
    rates (float, > 0) sorted and without repeats, so equal grids compare equal.

    Parameters
    ----------
    grid : mapping of layer group name (early, middle, late, fc) to a list of learning rates.
    source : what to call the grid in error messages (a file name).

    Raises ValueError naming ``source`` for an unknown or missing group, an empty list, or a
    learning rate that is not a positive finite number.
    """
    if not isinstance(grid, Mapping):
        raise ValueError(
            f"{source}: expected a JSON object mapping each layer group to a list of learning "
            f"rates, e.g. {json.dumps(DEFAULT_GRID)}; got {type(grid).__name__}"
        )
    unknown = sorted(set(grid) - set(LAYER_GROUPS))
    if unknown:
        raise ValueError(
            f"{source}: unknown layer group(s) {', '.join(map(repr, unknown))}; "
            f"expected exactly {', '.join(LAYER_GROUPS)}"
        )
    missing = [group for group in LAYER_GROUPS if group not in grid]
    if missing:
        raise ValueError(
            f"{source}: missing layer group(s) {', '.join(map(repr, missing))}; every group of "
            f"{', '.join(LAYER_GROUPS)} needs a list of learning rates"
        )
    return {group: _rates(grid[group], group, source) for group in LAYER_GROUPS}


def _rates(values: Any, group: str, source: str) -> list[float]:
    """One group's learning rates, checked, sorted and without repeats."""
    if not isinstance(values, list | tuple) or len(values) == 0:
        raise ValueError(
            f"{source}: {group!r} must be a non-empty list of learning rates; got {values!r}"
        )
    rates = []
    for value in values:
        # bool is an int to Python, and a JSON "1e-3" string is a typo, not a rate.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"{source}: learning rate {value!r} of {group!r} is not a number; "
                "expected positive numbers like 1e-4"
            )
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"{source}: learning rate {value!r} of {group!r} must be a positive, finite number"
            )
        rates.append(float(value))
    return sorted(set(rates))


def load_grid(path: str | Path) -> dict[str, list[float]]:
    """Read a grid file (``{"early": [1e-5, 1e-4], "middle": [...], "late": [...], "fc": [...]}``)
    and validate it (see :func:`validate_grid`); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read grid file {path}: {err.strerror or err}") from None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"grid file {path} is not valid JSON: {err}") from None
    return validate_grid(grid, source=f"grid file {path}")


def resolve_grid(grid: Mapping[str, list[float]] | str | Path | None) -> dict[str, list[float]]:
    """A grid argument (None: DEFAULT_GRID; a path: a grid file; a mapping) validated."""
    if grid is None:
        return validate_grid(DEFAULT_GRID, source="DEFAULT_GRID")
    if isinstance(grid, str | Path):
        return load_grid(grid)
    return validate_grid(grid)
