"""The physics: lenstronomy models, rendering, noise and normalization.

Cosmology and units
    Flat LambdaCDM (the preset's H0 and Omega_m) between the preset's lens and source
    redshifts. lenstronomy works in angles: a mass M enters as the Einstein radius of a point of
    that mass, ``theta_E = sqrt(M / (pi * Sigma_crit))`` arcsec, where Sigma_crit
    (M_sun/arcsec^2, 1.15e11 at z_l = 0.5, z_s = 1) is ``LensCosmo.sigma_crit_angle``.
Grid and optics
    ``image_size`` x ``image_size`` pixels of ``pixel_scale`` arcsec centred on the lens axis,
    Gaussian PSF of ``psf_fwhm`` arcsec truncated at 5 sigma, no supersampling.
Noise, per preset
    ``legacy``: lens light plus lensed source in counts/s, Poisson noise for ``exposure_time``
    in its Gaussian approximation, plus Gaussian background noise (both from the image's own
    generator; lenstronomy's helpers would use the global one).
    ``test-i``: the lensed source alone (no lens light), scaled so its brightest noiseless pixel
    holds the drawn ``peak_counts``, on a flat sky of ``sky_counts``; each pixel is then an
    integer Poisson draw, so after min-max normalization every value is a multiple of 1/k,
    k = max - min counts, as in the real set.
    ``model-a``: the lensed source alone (continuous, arbitrary units) plus Gaussian background
    noise of one sigma per image, the noiseless peak divided by the drawn ``peak_snr``.
"""

from __future__ import annotations

import math

import numpy as np

from lensing.simulate.presets import LegacyPreset, ModelAPreset, Preset, TestIPreset

# Per-process caches: building lenstronomy's grid, PSF and model objects costs more than
# drawing an image, so each worker builds them once per (preset, lens model list).
_IMAGE_MODELS: dict[tuple, object] = {}
_SIGMA_CRIT: dict[tuple, float] = {}


def sigma_crit_angle(preset: Preset) -> float:
    """Critical surface density of the preset's lens/source pair, in M_sun/arcsec^2."""
    key = (preset.hubble_constant, preset.omega_matter, preset.z_lens, preset.z_source)
    if key not in _SIGMA_CRIT:
        from astropy.cosmology import FlatLambdaCDM
        from lenstronomy.Cosmo.lens_cosmo import LensCosmo

        cosmo = FlatLambdaCDM(H0=preset.hubble_constant, Om0=preset.omega_matter)
        lens_cosmo = LensCosmo(z_lens=preset.z_lens, z_source=preset.z_source, cosmo=cosmo)
        _SIGMA_CRIT[key] = float(lens_cosmo.sigma_crit_angle)
    return _SIGMA_CRIT[key]


def point_mass_theta_e(mass: np.ndarray | float, preset: Preset) -> np.ndarray:
    """Einstein radius (arcsec) of point masses ``mass`` (M_sun): M = pi theta_E^2 Sigma_crit."""
    return np.sqrt(np.asarray(mass, dtype=float) / (math.pi * sigma_crit_angle(preset)))


def image_model(preset: Preset, lens_models: tuple[str, ...]):
    """The cached lenstronomy ImageModel of ``preset`` for the lens profiles ``lens_models``."""
    # What the models depend on: the family (its light models), grid, PSF and lens profiles.
    # Not the rest of the preset, so presets drawn per image (the pretraining corpus) share them.
    key = (type(preset), preset.image_size, preset.pixel_scale, preset.psf_fwhm, lens_models)
    if key not in _IMAGE_MODELS:
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        n, pix = preset.image_size, preset.pixel_scale
        corner = -(n - 1) / 2 * pix  # the grid is centred on the lens axis
        grid = PixelGrid(
            nx=n, ny=n, transform_pix2angle=np.eye(2) * pix, ra_at_xy_0=corner, dec_at_xy_0=corner
        )
        psf = PSF(psf_type="GAUSSIAN", fwhm=preset.psf_fwhm, pixel_size=pix, truncation=5)
        with_light = isinstance(preset, LegacyPreset)
        one_sersic = with_light or isinstance(preset, ModelAPreset)
        _IMAGE_MODELS[key] = ImageModel(
            grid,
            psf,
            lens_model_class=LensModel(list(lens_models)),
            source_model_class=LightModel(
                ["SERSIC_ELLIPSE"] if one_sersic else ["SERSIC_ELLIPSE", "SERSIC"]
            ),
            lens_light_model_class=LightModel(["SERSIC_ELLIPSE"] if with_light else []),
            kwargs_numerics={"supersampling_factor": 1, "supersampling_convolution": False},
        )
    return _IMAGE_MODELS[key]


def noiseless(params: dict, preset: Preset) -> np.ndarray:
    """The model image of ``draw_parameters``' output, shape (size, size), before any noise.

    Units: counts/s per pixel for ``legacy``; arbitrary (source amplitude 1) for ``test-i`` and
    ``model-a``.
    """
    model = image_model(preset, params["lens_models"])
    if params["lens_light"]:
        return model.image(params["lens"], params["source"], params["lens_light"])
    return model.image(params["lens"], params["source"], lens_light_add=False)


def render(params: dict, rng: np.random.Generator | None, preset: Preset) -> np.ndarray:
    """The image of ``draw_parameters``' output, shape (size, size).

    ``legacy``: counts/s per pixel, with Gaussian-approximated Poisson and background noise
    drawn from ``rng`` (None: the noiseless model). ``test-i``: counts, the source scaled to
    ``params["peak_counts"]`` on a flat ``sky_counts`` sky, integer Poisson draws from ``rng``
    (None: the noiseless expected counts). ``model-a``: arbitrary units, Gaussian noise of
    sigma = noiseless peak / ``params["peak_snr"]`` from ``rng`` (None: the noiseless model).
    """
    image = noiseless(params, preset)
    if isinstance(preset, ModelAPreset):
        if rng is None:
            return image
        return image + rng.standard_normal(image.shape) * (image.max() / params["peak_snr"])
    if isinstance(preset, TestIPreset):
        peak = image.max()
        if not peak > 0:
            raise ValueError(f"lensed source has peak {peak!r}; expected a positive image")
        image = image * (params["peak_counts"] / peak) + preset.sky_counts
        # np.abs: the PSF convolution can leave tiny negative values far from the ring.
        return image if rng is None else rng.poisson(np.abs(image)).astype(np.float64)
    if rng is not None:
        poisson_sigma = np.sqrt(np.abs(image) / preset.exposure_time)
        image = image + rng.standard_normal(image.shape) * poisson_sigma
        image = image + rng.standard_normal(image.shape) * preset.background_sigma
    return image


def normalize(image: np.ndarray) -> np.ndarray:
    """Min-max normalize ``image`` (H, W) to [0, 1] as float64, shaped (1, H, W) like the real
    set. Raises ValueError for a constant image."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = image.min(), image.max()
    if not hi > lo:
        raise ValueError(f"cannot normalize a constant image (value {lo!r}); expected a range")
    return ((image - lo) / (hi - lo))[np.newaxis]
