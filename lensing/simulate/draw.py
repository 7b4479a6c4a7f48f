"""Drawing one image's lenstronomy parameters from a preset.

Every function draws from the image's own ``numpy.random.Generator``, always in the same order,
and the smooth part (main lens, source) comes first: for one generator seed, the ``no``,
``sphere`` and ``vort`` images share their smooth lens and source and differ only in the
substructure. The order of the draws in the ``legacy`` functions is frozen: changing it would
change that preset's images.
"""

from __future__ import annotations

import math

import numpy as np

from lensing.core.constants import CLASSES
from lensing.simulate.model_a import draw_model_a
from lensing.simulate.physics import point_mass_theta_e
from lensing.simulate.presets import (
    DEFAULT_PRESET,
    PRESETS,
    LegacyPreset,
    ModelAPreset,
    Preset,
    Range,
    TestIPreset,
)


def _uniform(rng: np.random.Generator, bounds: Range, size: int | None = None):
    return rng.uniform(bounds[0], bounds[1], size)


def _ellipticity(phi: float, q: float) -> tuple[float, float]:
    from lenstronomy.Util import param_util

    return param_util.phi_q2_ellipticity(phi, q)


def _sersic(
    rng: np.random.Generator, amp: float, r: Range, n: Range, e: tuple, x: float, y: float
):
    return {
        "amp": amp,
        "R_sersic": _uniform(rng, r),
        "n_sersic": _uniform(rng, n),
        "e1": e[0],
        "e2": e[1],
        "center_x": x,
        "center_y": y,
    }


def sample_masses(rng: np.random.Generator, n: int, bounds: Range, slope: float) -> np.ndarray:
    """``n`` masses (M_sun) from dN/dm ~ m^-slope between ``bounds`` (M_sun), by inverse CDF.

    ``slope`` must not be 1 (the power law's integral is then a logarithm).
    """
    lo, hi = bounds
    p = 1.0 - slope
    u = rng.uniform(size=n)
    return (lo**p + u * (hi**p - lo**p)) ** (1.0 / p)


def _legacy_smooth(rng: np.random.Generator, preset: LegacyPreset) -> tuple[list, list, list]:
    """SIE + SHEAR kwargs, lens light and source of a legacy image, in the frozen draw order."""
    from lenstronomy.Util import param_util

    theta_e = _uniform(rng, preset.theta_e)
    phi = _uniform(rng, (0.0, math.pi))
    e1, e2 = _ellipticity(phi, _uniform(rng, preset.lens_q))
    cx, cy = _uniform(rng, preset.lens_center, 2)
    g1, g2 = param_util.shear_polar2cartesian(
        _uniform(rng, (0.0, math.pi)), _uniform(rng, preset.shear)
    )
    lens = [
        {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy},
        {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0},
    ]
    light_e = _ellipticity(
        phi + _uniform(rng, preset.lens_light_dphi), _uniform(rng, preset.lens_light_q)
    )
    amp = _uniform(rng, preset.lens_light_amp)
    lens_light = [_sersic(rng, amp, preset.lens_light_r, preset.lens_light_n, light_e, cx, cy)]
    source_e = _ellipticity(_uniform(rng, (0.0, math.pi)), _uniform(rng, preset.source_q))
    offset, offset_angle = _uniform(rng, preset.source_offset), _uniform(rng, (0.0, 2 * math.pi))
    sx, sy = cx + offset * math.cos(offset_angle), cy + offset * math.sin(offset_angle)
    amp = _uniform(rng, preset.source_amp)
    source = [_sersic(rng, amp, preset.source_r, preset.source_n, source_e, sx, sy)]
    return lens, lens_light, source


def _subhalos(rng, n: int, masses: np.ndarray, radius: Range, theta_e: float, cx, cy):
    """Positions (arcsec) of ``n`` clumps at ``radius`` x theta_e around (cx, cy)."""
    r = _uniform(rng, radius, n) * theta_e
    angle = _uniform(rng, (0.0, 2 * math.pi), n)
    return masses, cx + r * np.cos(angle), cy + r * np.sin(angle)


def _vortex(rng, total: float, preset: Preset, theta_e: float, cx, cy):
    """Equal point masses on a straight line near the ring; arrays (masses, x, y)."""
    masses = np.full(preset.vortex_points, total / preset.vortex_points)
    length = _uniform(rng, preset.vortex_length)
    direction = _uniform(rng, (0.0, math.pi))
    radius = _uniform(rng, preset.vortex_radius) * theta_e
    angle = _uniform(rng, (0.0, 2 * math.pi))
    along = np.linspace(-length / 2, length / 2, preset.vortex_points)
    xs = cx + radius * math.cos(angle) + along * math.cos(direction)
    ys = cy + radius * math.sin(angle) + along * math.sin(direction)
    return masses, xs, ys


def _add_clumps(lens: list, masses, xs, ys, preset: Preset) -> None:
    """Append POINT_MASS kwargs and, when compensating, one negative GAUSSIAN per clump.

    The substructure's mass inside the ring is taken from the smooth halo, not added to it: an
    SIS holds pi theta_E_SIE theta_E Sigma_crit inside theta_E, a point mass pi theta_i^2
    Sigma_crit, so the ring keeps its radius (mass outside it does not move it) and the mass
    inside the arcs is no class signal.
    """
    thetas = point_mass_theta_e(masses, preset)
    for m_theta, x, y in zip(thetas, xs, ys, strict=True):
        lens.append({"theta_E": float(m_theta), "center_x": float(x), "center_y": float(y)})
    if preset.compensation_sigma > 0:
        for m_theta, x, y in zip(thetas, xs, ys, strict=True):
            lens.append(
                {
                    "amp": -math.pi * float(m_theta) ** 2,
                    "sigma": preset.compensation_sigma,
                    "center_x": float(x),
                    "center_y": float(y),
                }
            )
    else:
        theta_e, cx, cy = (lens[0][k] for k in ("theta_E", "center_x", "center_y"))
        inside = np.hypot(xs - cx, ys - cy) < theta_e
        lens[0]["theta_E"] = theta_e - float(np.sum(thetas[inside] ** 2)) / theta_e


def _finish(lens: list, masses: np.ndarray, source: list, lens_light: list) -> dict:
    models = ["SIE", "SHEAR"] + ["POINT_MASS"] * masses.size
    models += ["GAUSSIAN"] * (len(lens) - len(models))
    return {
        "lens": lens,
        "lens_models": tuple(models),
        "source": source,
        "lens_light": lens_light,
        "masses": masses,
    }


def _draw_legacy(class_name: str, rng: np.random.Generator, preset: LegacyPreset) -> dict:
    lens, lens_light, source = _legacy_smooth(rng, preset)
    theta_e, cx, cy = (lens[0][k] for k in ("theta_E", "center_x", "center_y"))
    masses = _substructure(
        class_name, rng, preset, preset.subhalo_mass, preset.vortex_mass_scale, lens
    )
    return _finish(lens, masses, source, lens_light)


def _substructure(
    class_name: str,
    rng: np.random.Generator,
    preset: Preset,
    bounds: tuple[float, float],
    vortex_ratio: float,
    lens: list,
) -> np.ndarray:
    """Add the class's clumps to ``lens`` (in place); their masses (M_sun), none for ``no``.

    bounds: (lightest, heaviest) subhalo mass in M_sun; vortex_ratio: a vortex's total mass in
    units of one drawn subhalo population's total mass.
    """
    theta_e, cx, cy = (lens[0][k] for k in ("theta_E", "center_x", "center_y"))
    slope = preset.mass_function_slope
    masses = np.zeros(0)
    if class_name == "sphere":
        drawn = sample_masses(rng, preset.n_subhalos, bounds, slope)
        masses, xs, ys = _subhalos(
            rng, preset.n_subhalos, drawn, preset.subhalo_radius, theta_e, cx, cy
        )
    elif class_name == "vort":
        total = vortex_ratio * sample_masses(rng, preset.n_subhalos, bounds, slope).sum()
        masses, xs, ys = _vortex(rng, total, preset, theta_e, cx, cy)
    if masses.size:
        _add_clumps(lens, masses, xs, ys, preset)
    return masses


def _test_i_smooth(rng: np.random.Generator, preset: TestIPreset) -> tuple[list, list]:
    """SIE + SHEAR kwargs and the source of a ``test-i`` image (no lens light)."""
    from lenstronomy.Util import param_util

    theta_e = _uniform(rng, preset.theta_e)
    ring_phi = _uniform(rng, preset.ring_phi)
    # In lenstronomy's convention an SIE elongates the ring across its mass's major axis and a
    # shear along its own angle: both turned so that the ring's long axis lies at ring_phi.
    e1, e2 = _ellipticity(ring_phi + math.pi / 2, _uniform(rng, preset.lens_q))
    cx, cy = _uniform(rng, preset.lens_center, 2)
    g1, g2 = param_util.shear_polar2cartesian(
        ring_phi + _uniform(rng, preset.shear_dphi), _uniform(rng, preset.shear)
    )
    lens = [
        {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy},
        {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0},
    ]
    source_e = _ellipticity(_uniform(rng, (0.0, math.pi)), _uniform(rng, preset.source_q))
    offset, offset_angle = _uniform(rng, preset.source_offset), _uniform(rng, (0.0, 2 * math.pi))
    sx, sy = cx + offset * math.cos(offset_angle), cy + offset * math.sin(offset_angle)
    # The amplitude is arbitrary: render() rescales the image to the drawn peak counts.
    source = [_sersic(rng, 1.0, preset.source_r, preset.source_n, source_e, sx, sy)]
    # A faint exponential disk around the source's core: lensed, it fills the ring's inside
    # with the faint floor the real images have there.
    halo = {"amp": _uniform(rng, preset.source_halo_amp), "R_sersic": 0.0, "n_sersic": 1.0}
    halo.update(R_sersic=_uniform(rng, preset.source_halo_r), center_x=sx, center_y=sy)
    return lens, [*source, halo]


def _draw_test_i(class_name: str, rng: np.random.Generator, preset: TestIPreset) -> dict:
    lens, source = _test_i_smooth(rng, preset)
    peak_counts = _uniform(rng, preset.peak_counts)
    # Lenses differ in their subhalo content: each image's mass scale is the preset's times
    # 10^u, u uniform in +-strength_dex (drawn for every class, so the streams stay alike).
    top = preset.substructure_mass * 10 ** _uniform(
        rng, (-preset.strength_dex, preset.strength_dex)
    )
    masses = np.zeros(0)
    if top > 0:  # else no substructure at all: every class is the smooth lens
        bounds = (preset.subhalo_mass_min_fraction * top, top)
        masses = _substructure(class_name, rng, preset, bounds, preset.vortex_mass_ratio, lens)
    return {**_finish(lens, masses, source, []), "peak_counts": peak_counts}


def draw_parameters(
    class_name: str, rng: np.random.Generator, preset: Preset = PRESETS[DEFAULT_PRESET]
) -> dict:
    """Draw one image's lenstronomy keyword arguments from ``preset``.

    ``class_name``: one of CLASSES. ``rng``: the image's generator. Returns ``{"lens": [SIE,
    SHEAR, POINT_MASS..., GAUSSIAN...], "lens_models": tuple of their names, "source":
    [SERSIC_ELLIPSE], "lens_light": [SERSIC_ELLIPSE] or [] (test-i has none), "masses":
    array of the point masses in M_sun}``, and for ``test-i`` ``"peak_counts"`` (counts at the
    brightest noiseless pixel above the sky). ``model-a``: see
    :func:`~lensing.simulate.model_a.draw_model_a` (an SIS, no GAUSSIAN, ``"peak_snr"``).
    """
    if class_name not in CLASSES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASSES}")
    if isinstance(preset, LegacyPreset):
        return _draw_legacy(class_name, rng, preset)
    if isinstance(preset, TestIPreset):
        return _draw_test_i(class_name, rng, preset)
    if isinstance(preset, ModelAPreset):
        return draw_model_a(class_name, rng, preset)
    raise ValueError(f"preset of type {type(preset).__name__}; expected a preset of PRESETS")
