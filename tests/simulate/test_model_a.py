"""The ``model-a`` preset: registered, documented, the real format, pinned bytes, and classes
that differ only by their substructure."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
from numpy.testing import assert_allclose

from lensing.core.constants import CLASSES
from lensing.simulate import (
    PRESETS,
    ModelAPreset,
    draw_parameters,
    point_mass_theta_e,
    render,
    simulate_image,
)
from lensing.simulate.presets import preset_name

MODEL_A = PRESETS["model-a"]

# sha256 of the array bytes of model-a images (seed 0): any change to the recipe shows here.
MODEL_A_SHA256 = {
    ("train", "no", 1): "e22f08401e4a7f8e1d5f4167c28628d8aa672e4fa18fc3fad466e654d2de57a0",
    ("train", "sphere", 2): "956ab95e129df08ad2b5da2fd93942c11e7ebd150e0706e06c36d3917784ca8e",
    ("val", "vort", 1): "ed28cbb297aaa398b778f3b0c5548eded61c3db3c2282d074bb99c1ca68dc8c6",
}


def test_registered_and_every_field_documented():
    assert isinstance(MODEL_A, ModelAPreset)
    assert "arXiv:1909.07346" in ModelAPreset.__doc__ and "2008.12731" in ModelAPreset.__doc__
    source = inspect.getsource(ModelAPreset)
    own = [
        f.name for f in dataclasses.fields(ModelAPreset) if f.name in ModelAPreset.__annotations__
    ]
    assert len(own) == 15
    for name in own:
        (line,) = [s for s in source.splitlines() if s.strip().startswith(f"{name}:")]
        assert "  # " in line and line.split("  # ", 1)[1].strip(), f"{name} has no unit comment"
    assert preset_name(MODEL_A) == "model-a"


def test_images_have_the_real_format_and_pinned_bytes(check_pinned_bytes):
    check_pinned_bytes("model-a", MODEL_A_SHA256)


def test_classes_differ_only_by_their_substructure():
    params = {name: draw_parameters(name, np.random.default_rng(7), MODEL_A) for name in CLASSES}
    no, sphere, vort = params["no"], params["sphere"], params["vort"]
    assert no["lens_models"] == ("SIS", "SHEAR") and no["masses"].size == 0
    assert sphere["lens_models"].count("POINT_MASS") == MODEL_A.n_subhalos
    assert vort["lens_models"].count("POINT_MASS") == MODEL_A.vortex_points
    assert "GAUSSIAN" not in sphere["lens_models"] + vort["lens_models"]
    assert no["source"] == sphere["source"] == vort["source"]
    assert no["lens"][1] == sphere["lens"][1] == vort["lens"][1]  # the same shear
    assert no["peak_snr"] == sphere["peak_snr"] == vort["peak_snr"]
    lo, hi = MODEL_A.subhalo_mass
    assert ((sphere["masses"] >= lo) & (sphere["masses"] <= hi)).all()
    assert np.ptp(vort["masses"]) == 0
    # The SIS gives up the point masses' mass inside its Einstein radius.
    theta_e, main = no["lens"][0]["theta_E"], sphere["lens"][0]
    thetas = point_mass_theta_e(sphere["masses"], MODEL_A)
    radii = [
        math.hypot(k["center_x"] - main["center_x"], k["center_y"] - main["center_y"])
        for k in sphere["lens"][2:]
    ]
    inside = np.asarray(radii) < theta_e
    assert_allclose(main["theta_E"] * theta_e + np.sum(thetas[inside] ** 2), theta_e**2)
    # The vortex is a straight line of about vortex_length arcsec.
    points = np.array([[k["center_x"], k["center_y"]] for k in vort["lens"][2:]])
    steps = np.diff(points, axis=0)
    assert_allclose(steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0], 0, atol=1e-12)
    length = np.hypot(*(points[-1] - points[0]))
    assert MODEL_A.vortex_length[0] <= length <= MODEL_A.vortex_length[1]


def test_same_noise_in_every_class():
    images = {name: simulate_image(name, np.random.default_rng(9), MODEL_A) for name in CLASSES}
    smooth = {
        name: render(draw_parameters(name, np.random.default_rng(9), MODEL_A), None, MODEL_A)
        for name in CLASSES
    }
    noise = {}
    for name in CLASSES:
        rng = np.random.default_rng(9)
        params = draw_parameters(name, rng, MODEL_A)
        noise[name] = render(params, rng, MODEL_A) - smooth[name]
        assert np.array_equal(
            images[name], simulate_image(name, np.random.default_rng(9), MODEL_A)
        )
    # Same draws, noise scaled by each image's own peak: equal up to that scale.
    for name in ("sphere", "vort"):
        ratio = smooth[name].max() / smooth["no"].max()
        assert_allclose(noise[name], noise["no"] * ratio, rtol=1e-10, atol=1e-12)
