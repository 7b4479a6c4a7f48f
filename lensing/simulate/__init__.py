"""Simulated strong-lensing images in the real data set's format, made with lenstronomy.

``python -m lensing simulate --out DIR --train N --val N --test N [--preset NAME]`` writes
``DIR/<split>/<class>/<i>.npy`` and ``DIR/manifest.json``; ``--check DIR`` compares a folder
with the real Test I set. The modules, one concept each:

- :mod:`~lensing.simulate.presets`: the named presets (``test-i``, the default, ``legacy``
  and ``model-a``), dataclasses of documented parameters with units;
- :mod:`~lensing.simulate.draw`: drawing one image's lens, source and substructure
  (:mod:`~lensing.simulate.model_a` for the ``model-a`` family);
- :mod:`~lensing.simulate.physics`: the physics (lenstronomy models, rendering, noise,
  normalization);
- :mod:`~lensing.simulate.writer`: the data set on disk (layout, manifest, workers, resume);
- :mod:`~lensing.simulate.likeness`: the statistics that compare a set with the real one.

Its command line is :mod:`lensing.cli.simulate`.
"""

from lensing.simulate.draw import draw_parameters, sample_masses
from lensing.simulate.likeness import likeness, likeness_table
from lensing.simulate.physics import (
    normalize,
    point_mass_theta_e,
    render,
    sigma_crit_angle,
)
from lensing.simulate.presets import (
    DEFAULT_PRESET,
    PRESETS,
    LegacyPreset,
    ModelAPreset,
    Preset,
    TestIPreset,
    get_preset,
)
from lensing.simulate.writer import (
    IMAGE_SHAPE,
    image_seed,
    is_valid_image,
    simulate_dataset,
    simulate_image,
)

__all__ = [
    "DEFAULT_PRESET",
    "IMAGE_SHAPE",
    "PRESETS",
    "LegacyPreset",
    "ModelAPreset",
    "TestIPreset",
    "Preset",
    "draw_parameters",
    "get_preset",
    "image_seed",
    "is_valid_image",
    "likeness",
    "likeness_table",
    "normalize",
    "point_mass_theta_e",
    "render",
    "sample_masses",
    "sigma_crit_angle",
    "simulate_dataset",
    "simulate_image",
]
