"""Drawing one ``model-a`` image's parameters: SIS + shear, a Sersic source, point masses.

The smooth part (main lens, source, noise level) is drawn first from the image's generator,
then one integer from it seeds the substructure's own generator: whatever the class, the
image's generator is left in the same state, so for one seed the ``no``, ``sphere`` and
``vort`` images share their lens, source and noise and differ only in the substructure.
"""

from __future__ import annotations

import math

import numpy as np

from lensing.simulate.physics import point_mass_theta_e
from lensing.simulate.presets import ModelAPreset

LENS_MODELS = ("SIS", "SHEAR")


def _smooth(rng: np.random.Generator, preset: ModelAPreset) -> tuple[list, list]:
    """SIS + SHEAR kwargs and the SERSIC_ELLIPSE source of a ``model-a`` image."""
    from lenstronomy.Util import param_util

    theta_e = rng.uniform(*preset.theta_e)
    cx, cy = rng.uniform(*preset.lens_center, 2)
    g1, g2 = param_util.shear_polar2cartesian(
        rng.uniform(0.0, math.pi), rng.uniform(*preset.shear)
    )
    lens = [
        {"theta_E": theta_e, "center_x": cx, "center_y": cy},
        {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0},
    ]
    e1, e2 = param_util.phi_q2_ellipticity(
        rng.uniform(0.0, math.pi), rng.uniform(*preset.source_q)
    )
    offset, angle = rng.uniform(*preset.source_offset), rng.uniform(0.0, 2 * math.pi)
    source = {
        "amp": 1.0,  # arbitrary: the noise is set relative to the image's peak
        "R_sersic": rng.uniform(*preset.source_r),
        "n_sersic": rng.uniform(*preset.source_n),
        "e1": e1,
        "e2": e2,
        "center_x": cx + offset * math.cos(angle),
        "center_y": cy + offset * math.sin(angle),
    }
    return lens, [source]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), n))


def _clumps(class_name: str, rng: np.random.Generator, preset: ModelAPreset, cx, cy):
    """Masses (M_sun) and positions (arcsec) of the class's point masses; none for ``no``."""
    if class_name == "sphere":
        masses = _log_uniform(rng, preset.subhalo_mass, preset.n_subhalos)
        lo, hi = preset.subhalo_radius
        r = np.sqrt(rng.uniform(lo**2, hi**2, preset.n_subhalos))  # uniform in area
        angle = rng.uniform(0.0, 2 * math.pi, preset.n_subhalos)
        return masses, cx + r * np.cos(angle), cy + r * np.sin(angle)
    if class_name == "vort":
        total = (
            preset.vortex_mass_ratio
            * _log_uniform(rng, preset.subhalo_mass, preset.n_subhalos).sum()
        )
        masses = np.full(preset.vortex_points, total / preset.vortex_points)
        length, direction = rng.uniform(*preset.vortex_length), rng.uniform(0.0, math.pi)
        radius, angle = rng.uniform(*preset.vortex_radius), rng.uniform(0.0, 2 * math.pi)
        along = np.linspace(-length / 2, length / 2, preset.vortex_points)
        xs = cx + radius * math.cos(angle) + along * math.cos(direction)
        ys = cy + radius * math.sin(angle) + along * math.sin(direction)
        return masses, xs, ys
    return np.zeros(0), np.zeros(0), np.zeros(0)


def draw_model_a(class_name: str, rng: np.random.Generator, preset: ModelAPreset) -> dict:
    """One ``model-a`` image: ``{"lens": [SIS, SHEAR, POINT_MASS...], "lens_models",
    "source": [SERSIC_ELLIPSE], "lens_light": [], "masses" (M_sun), "peak_snr"}``.

    The point masses' mass inside the Einstein radius is taken from the SIS: it holds
    pi theta_SIS theta_E Sigma_crit inside theta_E and a point mass pi theta_i^2 Sigma_crit, so
    theta_SIS = theta_E - sum(theta_i^2 inside) / theta_E keeps the ring's size.
    """
    lens, source = _smooth(rng, preset)
    peak_snr = rng.uniform(*preset.peak_snr)
    substructure_rng = np.random.default_rng(rng.integers(2**63))
    main = lens[0]
    masses, xs, ys = _clumps(
        class_name, substructure_rng, preset, main["center_x"], main["center_y"]
    )
    thetas = point_mass_theta_e(masses, preset)
    for m_theta, x, y in zip(thetas, xs, ys, strict=True):
        lens.append({"theta_E": float(m_theta), "center_x": float(x), "center_y": float(y)})
    theta_e = main["theta_E"]
    inside = np.hypot(xs - main["center_x"], ys - main["center_y"]) < theta_e
    main["theta_E"] = theta_e - float(np.sum(thetas[inside] ** 2)) / theta_e
    return {
        "lens": lens,
        "lens_models": LENS_MODELS + ("POINT_MASS",) * masses.size,
        "source": source,
        "lens_light": [],
        "masses": masses,
        "peak_snr": peak_snr,
    }
