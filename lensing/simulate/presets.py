"""Named simulation presets: frozen dataclasses of documented parameters, one per look.

Ranges are ``(low, high)`` of a uniform draw, one draw per image. Angles on the sky are in
arcsec, position angles in radians (0 = along the image's x axis, counter-clockwise), masses in
solar masses (M_sun). Every preset is hashable, so the lenstronomy objects built for it can be
cached per worker process, and its ``dataclasses.asdict`` is what the manifest records.

``legacy``
    The first design of this simulator: an SIE with lens light and a bright, easy class signal
    (for tests that want one). Its images are byte-identical, seed for seed, to those it gave
    before presets existed.
``test-i`` (the default)
    Made to look like the real DeepLense Common Test I images in their global statistics
    (see :mod:`lensing.simulate.likeness`): integer counts on a flat Poisson sky, no lens light,
    a ring elongated along x, and substructure whose strength is the one parameter
    ``substructure_mass``.
``model-a``
    A second, independent physics family after the DeepLense "Model A" design (an SIS main
    lens, Sersic source, Gaussian noise; see :class:`ModelAPreset`), so that defaults are not
    fitted to one simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lensing.core.constants import IMAGE_SIZE

Range = tuple[float, float]


@dataclass(frozen=True)
class Instrument:
    """What every preset shares: grid, optics and cosmology.

    image_size: pixels per side (int). pixel_scale: arcsec per pixel. psf_fwhm: arcsec, FWHM of
    the Gaussian PSF (truncated at 5 sigma). z_lens, z_source: redshifts. hubble_constant:
    km/s/Mpc and omega_matter (dimensionless) of a flat LambdaCDM cosmology, which sets the
    critical density that turns masses into Einstein radii.
    """

    image_size: int = IMAGE_SIZE
    pixel_scale: float = 0.05
    psf_fwhm: float = 0.10
    z_lens: float = 0.5
    z_source: float = 1.0
    hubble_constant: float = 70.0
    omega_matter: float = 0.3


@dataclass(frozen=True)
class LegacyPreset(Instrument):
    """The first design: SIE + shear, Sersic lens light, Sersic source, Gaussian noise.

    Main lens: theta_e (arcsec, Einstein radius), lens_q (axis ratio), position angle uniform in
    [0, pi), lens_center (arcsec, offset in x and in y), shear (dimensionless strength, angle
    uniform in [0, pi)). Lens light: lens_light_amp (counts/s/arcsec^2 at R_sersic),
    lens_light_r (arcsec, half-light radius), lens_light_n (Sersic index), lens_light_q (axis
    ratio), lens_light_dphi (rad, position angle offset from the mass). Source: source_amp
    (counts/s/arcsec^2), source_r (arcsec), source_n, source_q, position angle uniform in
    [0, pi), source_offset (arcsec from the lens centre, at an angle uniform in [0, 2 pi)).
    Substructure: n_subhalos point masses (``sphere``) from dN/dm ~ m^-mass_function_slope
    between subhalo_mass (M_sun), at subhalo_radius (units of theta_e) from the centre;
    ``vort``: vortex_points equal masses on a line of vortex_length (arcsec) centred at
    vortex_radius (units of theta_e), of total mass vortex_mass_scale times one subhalo
    population's. compensation_sigma: arcsec, width of the negative Gaussian that takes each
    clump's mass from the smooth halo (0: shrink the SIE instead). Noise: exposure_time (s) of
    Gaussian-approximated Poisson noise, background_sigma (counts/s per pixel).
    """

    theta_e: Range = (1.0, 1.4)
    lens_q: Range = (0.75, 1.0)
    lens_center: Range = (-0.05, 0.05)
    shear: Range = (0.0, 0.05)
    lens_light_amp: Range = (0.5, 1.5)
    lens_light_r: Range = (0.4, 0.8)
    lens_light_n: Range = (2.5, 4.5)
    lens_light_q: Range = (0.7, 1.0)
    lens_light_dphi: Range = (-0.2, 0.2)
    source_amp: Range = (4.0, 8.0)
    source_r: Range = (0.10, 0.30)
    source_n: Range = (0.8, 2.0)
    source_q: Range = (0.5, 1.0)
    source_offset: Range = (0.0, 0.35)
    n_subhalos: int = 25
    subhalo_mass: Range = (1e9, 3e10)
    mass_function_slope: float = 1.9
    subhalo_radius: Range = (0.8, 1.2)
    vortex_points: int = 40
    vortex_length: Range = (1.0, 2.5)
    vortex_radius: Range = (0.8, 1.2)
    compensation_sigma: float = 0.3
    vortex_mass_scale: float = 1.0
    exposure_time: float = 3000.0
    background_sigma: float = 0.003


@dataclass(frozen=True)
class TestIPreset(Instrument):
    """Looks like the real Test I set; see the field comments for each parameter's unit.

    The ring's shape comes from the main lens alone (no lens light): an SIE plus external shear,
    both turned so that the ring's long axis lies at ``ring_phi``, which scatters little around
    0 (the x axis): the SIE's mass major axis is then near the y axis (lenstronomy's SIE makes
    the ring long across its mass's major axis) and the shear angle near 0. Source offsets up to
    about the caustic's size give full rings, arcs, folds and quads. The source is a Sersic core
    plus a faint exponential disk (the light inside the ring). The image is the lensed source
    scaled to ``peak_counts`` at its brightest noiseless pixel, on a flat sky of ``sky_counts``,
    drawn as integer Poisson counts, then min-max normalized per image.

    The substructure sits near the ring, where it perturbs the arcs, and each clump's mass is
    taken from the smooth halo by a negative Gaussian (``compensation_sigma``), so the ring keeps
    its size: the class signal is local, not in the global statistics.
    ``substructure_mass`` is the one strength knob: each image's mass scale is it times 10^u,
    u uniform in +-``strength_dex`` (lenses differ in their subhalo content); subhalo masses
    are drawn from dN/dm ~ m^-mass_function_slope between subhalo_mass_min_fraction x and
    1 x that scale, and a vortex carries vortex_mass_ratio times one subhalo population's
    total mass.

    The defaults were set by measurement against the real set's difficulty
    (docs/simulated-data.md, "How hard the stand-in is"): the pixel-statistics baseline of
    ``benchmarks.separability`` at about 0.60 test macro AUC (2,000 / 250 / 500 images per
    class), since on the real set the classes have the same global statistics, and ``sphere``
    the hardest class for a CNN, as on the real set. The earlier default (2e10 M_sun for every
    image, vortex ratio 1) gave a baseline of 0.71, a CNN AUC of 0.999 at 2,000 images per
    class and 6 epochs, and ``vort`` as the hardest class. Baselines at 2,000 per class: 5e9
    fixed 0.577, 8e9 fixed 0.635 (both with vortex ratio 2), 3.5e9 +- 0.5 dex 0.577, 5e9 +- 0.5
    dex 0.603.
    """

    psf_fwhm: float = 0.25  # arcsec, Gaussian PSF (sets, with the source, the ring's width)
    theta_e: Range = (1.20, 1.30)  # arcsec, Einstein radius of the SIE
    lens_q: Range = (0.70, 0.90)  # axis ratio of the SIE
    ring_phi: Range = (-0.10, 0.10)  # rad, long axis of the ring (SIE major axis + pi/2)
    lens_center: Range = (-0.02, 0.02)  # arcsec, offset in x and in y
    shear: Range = (0.03, 0.08)  # external shear strength (dimensionless)
    shear_dphi: Range = (-0.10, 0.10)  # rad, shear angle minus ring_phi
    source_r: Range = (0.18, 0.36)  # arcsec, Sersic half-light radius of the source's core
    source_n: Range = (1.0, 2.0)  # Sersic index of the source's core
    source_q: Range = (0.6, 1.0)  # axis ratio of the source
    source_offset: Range = (0.0, 0.25)  # arcsec from the lens centre, at a uniform angle
    source_halo_r: Range = (0.8, 1.2)  # arcsec, half-light radius of the source's faint disk
    source_halo_amp: Range = (0.08, 0.22)  # the disk's amplitude / the core's, at each R_sersic
    peak_counts: Range = (755.0, 775.0)  # counts at the brightest noiseless pixel above sky
    sky_counts: float = 10.0  # counts per pixel of the flat sky (Poisson mean)
    substructure_mass: float = 5e9  # M_sun, THE strength: largest subhalo mass (calibrated)
    strength_dex: float = 0.5  # dex, per-image scatter of that mass: x 10^U(-s, s)
    subhalo_mass_min_fraction: float = 0.1  # lightest subhalo, in units of substructure_mass
    mass_function_slope: float = 1.9  # dN/dm ~ m^-slope
    n_subhalos: int = 10  # subhalos in a `sphere` image
    subhalo_radius: Range = (0.8, 1.2)  # distance from the lens centre, units of theta_E
    vortex_points: int = 30  # point masses along a `vort` line
    vortex_length: Range = (0.8, 1.6)  # arcsec, length of the line
    vortex_radius: Range = (0.8, 1.2)  # centre of the line, units of theta_E
    vortex_mass_ratio: float = 2.0  # vortex mass / one subhalo population's total mass
    compensation_sigma: float = 0.3  # arcsec, width of each clump's negative Gaussian mass


@dataclass(frozen=True)
class ModelAPreset(Instrument):
    """After the DeepLense "Model A" design (arXiv:1909.07346, arXiv:2008.12731), in lenstronomy.

    Main lens: a singular isothermal sphere (SIS, not an SIE) of Einstein radius near 1.2 arcsec
    plus external shear. Source: one elliptical Sersic profile. The noiseless image (continuous,
    no lens light) gets Gaussian background noise of one sigma for the whole image, set by the
    drawn ``peak_snr`` (brightest noiseless pixel / sigma), and is then min-max normalized.
    ``sphere``: ``n_subhalos`` point masses, log-uniform in ``subhalo_mass``, spread uniformly in
    area over an annulus ``subhalo_radius`` around the lens centre. ``vort``: ``vortex_points``
    equal point masses on a straight line about 1 arcsec long, of total mass ``vortex_mass_ratio``
    times one drawn subhalo population's. The substructure's mass inside the Einstein radius is
    taken from the SIS (its Einstein radius shrinks), so the ring keeps its size.
    ``subhalo_mass`` is the strength knob. Its default was set by measurement on 300/150
    images per class: the pixel-statistics baseline (``benchmarks.separability``) gave a macro
    AUC of 0.54 at (3e8, 3e9) M_sun, 0.61 at (5e8, 5e9) and 0.79 at (1e9, 1e10), while at
    (3e8, 3e9) the substructure still changes the noiseless image by a median 6 (sphere) and
    14 (vort) noise sigmas at its most changed pixel.
    """

    theta_e: Range = (1.10, 1.30)  # arcsec, Einstein radius of the SIS
    lens_center: Range = (-0.05, 0.05)  # arcsec, offset in x and in y
    shear: Range = (0.0, 0.10)  # external shear strength (dimensionless), angle uniform
    source_r: Range = (0.15, 0.40)  # arcsec, Sersic half-light radius of the source
    source_n: Range = (0.5, 2.5)  # Sersic index of the source (dimensionless)
    source_q: Range = (0.5, 1.0)  # axis ratio of the source (dimensionless)
    source_offset: Range = (0.0, 0.30)  # arcsec from the lens centre, at a uniform angle
    peak_snr: Range = (15.0, 30.0)  # brightest noiseless pixel / Gaussian noise sigma
    subhalo_mass: Range = (3e8, 3e9)  # M_sun, log-uniform per point mass (the strength)
    n_subhalos: int = 25  # point masses in a `sphere` image (count)
    subhalo_radius: Range = (0.3, 2.0)  # arcsec from the lens centre, uniform in area
    vortex_points: int = 25  # point masses along a `vort` line (count)
    vortex_length: Range = (0.8, 1.2)  # arcsec, length of the line
    vortex_radius: Range = (0.8, 1.6)  # arcsec, distance of the line's centre from the lens
    vortex_mass_ratio: float = 1.0  # vortex mass / one subhalo population's total mass


Preset = LegacyPreset | TestIPreset | ModelAPreset

PRESETS: dict[str, Preset] = {
    "legacy": LegacyPreset(),
    "test-i": TestIPreset(),
    "model-a": ModelAPreset(),
}
DEFAULT_PRESET = "test-i"


def preset_name(preset: Preset) -> str:
    """The registered name of ``preset``'s kind (``"legacy"``, ``"test-i"`` or ``"model-a"``)."""
    for name, registered in PRESETS.items():
        if type(registered) is type(preset):
            return name
    raise ValueError(f"preset of type {type(preset).__name__}; expected one of {list(PRESETS)}")


def get_preset(name: str, **overrides: float) -> Preset:
    """The preset called ``name`` (a key of PRESETS), with fields replaced by ``overrides``.

    Raises ValueError for an unknown name or field.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    base = PRESETS[name]
    known = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"preset {name!r} has no parameter {unknown}; expected some of {known}")
    return type(base)(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **overrides})
