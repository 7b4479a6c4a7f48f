"""The ``test-i`` preset, the default stand-in: pinned bytes, and a substructure strength that
varies from lens to lens around ``substructure_mass``."""

from __future__ import annotations

import dataclasses

import numpy as np

from lensing.core.constants import CLASSES
from lensing.simulate import (
    PRESETS,
    draw_parameters,
)

TEST_I = PRESETS["test-i"]

# sha256 of the array bytes of test-i images (seed 0): any change to the recipe shows here.
TEST_I_SHA256 = {
    ("train", "no", 1): "d41e66b0e3ffffe0526618f6120f2e74b5863c31c3268e49dfa8525c69784c76",
    ("train", "sphere", 2): "95c0f923d4540a98d16cf51ecb772ac4e48520ed4c13d4e194001bde1233b0fe",
    ("val", "vort", 1): "dba765910c9158055720cb48dc2fa544bb988940de6d31500dfb6151da105452",
}


def test_images_have_the_real_format_and_pinned_bytes(check_pinned_bytes):
    check_pinned_bytes("test-i", TEST_I_SHA256)


def heaviest(preset, class_name: str, n: int) -> np.ndarray:
    """The heaviest clump's mass (M_sun) in each of ``n`` drawn images."""
    return np.array(
        [
            draw_parameters(class_name, np.random.default_rng(s), preset)["masses"].max()
            for s in range(n)
        ]
    )


def test_the_strength_varies_from_lens_to_lens_within_its_scatter():
    fixed = dataclasses.replace(TEST_I, strength_dex=0.0)
    top, dex, low = TEST_I.substructure_mass, TEST_I.strength_dex, TEST_I.subhalo_mass_min_fraction
    assert dex > 0
    varied, steady = heaviest(TEST_I, "sphere", 300), heaviest(fixed, "sphere", 300)
    assert (steady <= top).all() and (steady >= low * top).all()
    assert (varied <= top * 10**dex).all() and (varied >= low * top * 10**-dex).all()
    # Some lenses carry more than the fixed preset's heaviest subhalo, some far less.
    assert (varied > top).mean() > 0.2
    assert (varied < top / 2).mean() > (steady < top / 2).mean() + 0.1
    assert np.std(np.log10(varied)) > 1.5 * np.std(np.log10(steady))
    # A vortex carries vortex_mass_ratio times a subhalo population's mass, scale for scale.
    vortex = np.array(
        [
            draw_parameters("vort", np.random.default_rng(s), fixed)["masses"].sum()
            for s in range(50)
        ]
    )
    population = fixed.n_subhalos * top * np.array([low, 1.0])
    assert (
        (vortex >= TEST_I.vortex_mass_ratio * population[0])
        & (vortex <= TEST_I.vortex_mass_ratio * population[1])
    ).all()


def test_the_smooth_lens_is_the_same_in_every_class():
    params = {name: draw_parameters(name, np.random.default_rng(3), TEST_I) for name in CLASSES}
    assert params["no"]["source"] == params["sphere"]["source"] == params["vort"]["source"]
    assert params["no"]["lens"][:2] == params["sphere"]["lens"][:2] == params["vort"]["lens"][:2]
    assert params["no"]["peak_counts"] == params["sphere"]["peak_counts"]
