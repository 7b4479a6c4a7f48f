"""Simulated strong-lensing images in the real data set's format, made with lenstronomy.

``python -m lensing simulate --out DIR --train N --val N --test N [--seed S] [--workers W]``
writes ``DIR/<split>/<class>/<i>.npy`` (i = 1..N per class), each a float64 array of shape
``(1, 150, 150)`` min-max normalized to [0, 1], and ``DIR/manifest.json`` (the recipe below, the
seed, the counts and the library versions). The manifest marks the folder as simulated: these
images imitate the ML4SCI DeepLense set in format and spirit, they are not that set.

The recipe (every parameter is drawn independently per image, uniformly in the range unless
said otherwise; angles on the sky are in arcsec, position angles in radians, masses in solar
masses M_sun, surface brightness in counts/s/arcsec^2, fluxes in counts/s per pixel):

Cosmology and units
    Flat LambdaCDM, H0 = 70 km/s/Mpc, Omega_m = 0.3; lens redshift z_l = 0.5, source redshift
    z_s = 1.0 (fixed). lenstronomy works in angles: a mass M enters as the Einstein radius of a
    point of that mass, ``theta_E = sqrt(M / (pi * Sigma_crit))`` arcsec, where Sigma_crit
    (M_sun/arcsec^2, 1.15e11 here) is ``LensCosmo(z_l, z_s).sigma_crit_angle``.
Instrument
    150 x 150 pixels of 0.05 arcsec (a 7.5 arcsec field), Gaussian PSF of FWHM 0.10 arcsec
    (2 pixels), truncated at 5 sigma; no supersampling.
Main lens (every class)
    SIE: Einstein radius ``theta_E`` in [1.0, 1.4] arcsec; axis ratio q in [0.75, 1.0];
    position angle in [0, pi); centre offset in [-0.05, 0.05] arcsec in x and in y.
    External SHEAR: strength gamma in [0, 0.05]; angle in [0, pi).
Lens galaxy light (every class)
    SERSIC_ELLIPSE centred on the mass: amplitude (at R_sersic) in [0.5, 1.5]
    counts/s/arcsec^2; R_sersic in [0.4, 0.8] arcsec; Sersic index in [2.5, 4.5]; axis ratio
    in [0.7, 1.0]; position angle that of the mass plus [-0.2, 0.2] rad.
Background source (every class)
    SERSIC_ELLIPSE: amplitude in [4, 8] counts/s/arcsec^2; R_sersic in [0.10, 0.30] arcsec;
    Sersic index in [0.8, 2.0]; axis ratio in [0.5, 1.0]; position angle in [0, pi); offset
    from the lens centre: radius in [0, 0.35] arcsec at an angle in [0, 2 pi).
``no``
    Nothing more: a smooth lens.
``sphere`` (subhalos)
    25 POINT_MASS subhalos with masses from dN/dm ~ m^-1.9 between 1e9 and 3e10 M_sun
    (inverse-CDF sampling), placed at a radius in [0.8, 1.2] theta_E of the main lens, at an
    angle in [0, 2 pi): scattered around the Einstein ring, where they perturb the arcs. Each
    point mass comes with a negative GAUSSIAN convergence of the same mass and width
    ``compensation_sigma`` = 0.3 arcsec at its place: the clump's mass is taken from the smooth
    halo around it, so the ring keeps its size and total light, and only the small-scale
    perturbation of the arcs carries the class.
``vort`` (vortex)
    A line of mass: 40 equal POINT_MASSes evenly spaced along a segment of length in
    [1.0, 2.5] arcsec, at a position angle in [0, pi), centred at a radius in [0.8, 1.2]
    theta_E at an angle in [0, 2 pi). Its total mass is that of an independent draw of the
    ``sphere`` population (25 masses from the same mass function), so the two substructure
    classes carry comparable mass and differ only in its shape.
Noise and normalization
    Poisson noise on the model image (lens light plus lensed source) for an exposure time of
    3000 s, in the Gaussian approximation of ``lenstronomy.Util.image_util.add_poisson``;
    Gaussian background noise of sigma 0.003 counts/s per pixel, as in ``add_background``.
    Both are drawn from the image's own random generator (lenstronomy's helpers use the global
    one), then the image is min-max normalized to [0, 1].

Reproducibility: image i of class c in split s gets the generator
``np.random.default_rng(np.random.SeedSequence([seed, split_index, class_index, i]))``, so a
seed gives byte-identical files whatever the number of workers or the order they run in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensing import config
from lensing.config import CLASSES, IMAGE_SIZE, MANIFEST, SPLITS
from lensing.io import atomic_save_npy, atomic_write_json

IMAGE_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
Range = tuple[float, float]


@dataclass(frozen=True)
class Recipe:
    """Every knob of the simulation; ranges are (low, high) of a uniform draw. See the module
    docstring for what each one means; units are in the comments."""

    image_size: int = IMAGE_SIZE  # pixels per side
    pixel_scale: float = 0.05  # arcsec per pixel
    psf_fwhm: float = 0.10  # arcsec, Gaussian PSF
    z_lens: float = 0.5  # redshift of the lens
    z_source: float = 1.0  # redshift of the source
    hubble_constant: float = 70.0  # km/s/Mpc, flat LambdaCDM
    omega_matter: float = 0.3  # matter density today
    # main lens: SIE + external shear
    theta_e: Range = (1.0, 1.4)  # arcsec, Einstein radius
    lens_q: Range = (0.75, 1.0)  # axis ratio of the SIE
    lens_center: Range = (-0.05, 0.05)  # arcsec, in x and in y
    shear: Range = (0.0, 0.05)  # external shear strength (dimensionless)
    # lens galaxy light: elliptical Sersic
    lens_light_amp: Range = (0.5, 1.5)  # counts/s/arcsec^2 at R_sersic
    lens_light_r: Range = (0.4, 0.8)  # arcsec, half-light radius
    lens_light_n: Range = (2.5, 4.5)  # Sersic index
    lens_light_q: Range = (0.7, 1.0)  # axis ratio
    lens_light_dphi: Range = (-0.2, 0.2)  # rad, position angle offset from the mass
    # background source: elliptical Sersic
    source_amp: Range = (4.0, 8.0)  # counts/s/arcsec^2 at R_sersic
    source_r: Range = (0.10, 0.30)  # arcsec, half-light radius
    source_n: Range = (0.8, 2.0)  # Sersic index
    source_q: Range = (0.5, 1.0)  # axis ratio
    source_offset: Range = (0.0, 0.35)  # arcsec, distance from the lens centre
    # substructure
    n_subhalos: int = 25  # point masses in a `sphere` image (and mass draws for a vortex)
    subhalo_mass: Range = (1e9, 3e10)  # M_sun, bounds of the mass function
    mass_function_slope: float = 1.9  # dN/dm ~ m^-slope
    subhalo_radius: Range = (0.8, 1.2)  # in units of the main theta_E
    vortex_points: int = 40  # point masses along the line of a `vort` image
    vortex_length: Range = (1.0, 2.5)  # arcsec
    vortex_radius: Range = (0.8, 1.2)  # centre of the line, in units of the main theta_E
    compensation_sigma: float = 0.3  # arcsec, width of each clump's negative mass
    vortex_mass_scale: float = 1.0  # vortex mass / a subhalo population's mass
    # noise
    exposure_time: float = 3000.0  # s, sets the Poisson noise
    background_sigma: float = 0.003  # counts/s per pixel, Gaussian background noise


RECIPE = Recipe()

# Per-process caches: building lenstronomy's grid, PSF and model objects costs more than
# drawing an image, so each worker builds them once per (recipe, number of point masses).
_IMAGE_MODELS: dict[tuple[Recipe, int], object] = {}
_SIGMA_CRIT: dict[Recipe, float] = {}


def sigma_crit_angle(recipe: Recipe = RECIPE) -> float:
    """Critical surface density of the recipe's lens/source pair, in M_sun/arcsec^2."""
    if recipe not in _SIGMA_CRIT:
        from astropy.cosmology import FlatLambdaCDM
        from lenstronomy.Cosmo.lens_cosmo import LensCosmo

        cosmo = FlatLambdaCDM(H0=recipe.hubble_constant, Om0=recipe.omega_matter)
        lens_cosmo = LensCosmo(z_lens=recipe.z_lens, z_source=recipe.z_source, cosmo=cosmo)
        _SIGMA_CRIT[recipe] = float(lens_cosmo.sigma_crit_angle)
    return _SIGMA_CRIT[recipe]


def point_mass_theta_e(mass: np.ndarray, recipe: Recipe = RECIPE) -> np.ndarray:
    """Einstein radius (arcsec) of point masses ``mass`` (M_sun): M = pi theta_E^2 Sigma_crit."""
    return np.sqrt(np.asarray(mass, dtype=float) / (math.pi * sigma_crit_angle(recipe)))


def _image_model(recipe: Recipe, lens_models: tuple[str, ...]):
    key = (recipe, lens_models)
    if key not in _IMAGE_MODELS:
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        n, pix = recipe.image_size, recipe.pixel_scale
        corner = -(n - 1) / 2 * pix  # the grid is centred on the lens axis
        grid = PixelGrid(
            nx=n, ny=n, transform_pix2angle=np.eye(2) * pix, ra_at_xy_0=corner, dec_at_xy_0=corner
        )
        psf = PSF(psf_type="GAUSSIAN", fwhm=recipe.psf_fwhm, pixel_size=pix, truncation=5)
        lens = LensModel(list(lens_models))
        _IMAGE_MODELS[key] = ImageModel(
            grid,
            psf,
            lens_model_class=lens,
            source_model_class=LightModel(["SERSIC_ELLIPSE"]),
            lens_light_model_class=LightModel(["SERSIC_ELLIPSE"]),
            kwargs_numerics={"supersampling_factor": 1, "supersampling_convolution": False},
        )
    return _IMAGE_MODELS[key]


def _uniform(rng: np.random.Generator, bounds: Range, size: int | None = None):
    return rng.uniform(bounds[0], bounds[1], size)


def sample_masses(rng: np.random.Generator, n: int, recipe: Recipe = RECIPE) -> np.ndarray:
    """``n`` masses (M_sun) from dN/dm ~ m^-slope between the recipe's bounds (inverse CDF)."""
    lo, hi = recipe.subhalo_mass
    p = 1.0 - recipe.mass_function_slope
    u = rng.uniform(size=n)
    return (lo**p + u * (hi**p - lo**p)) ** (1.0 / p)


def draw_parameters(class_name: str, rng: np.random.Generator, recipe: Recipe = RECIPE) -> dict:
    """Draw one image's lenstronomy keyword arguments.

    Returns ``{"lens": [SIE, SHEAR, POINT_MASS...], "source": [SERSIC_ELLIPSE],
    "lens_light": [SERSIC_ELLIPSE], "masses": array of the point masses in M_sun}``; the smooth
    part is drawn first, so it uses the same random numbers in every class.
    """
    from lenstronomy.Util import param_util

    if class_name not in CLASSES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASSES}")
    theta_e = _uniform(rng, recipe.theta_e)
    phi = _uniform(rng, (0.0, math.pi))
    e1, e2 = param_util.phi_q2_ellipticity(phi, _uniform(rng, recipe.lens_q))
    cx, cy = _uniform(rng, recipe.lens_center, 2)
    g1, g2 = param_util.shear_polar2cartesian(
        _uniform(rng, (0.0, math.pi)), _uniform(rng, recipe.shear)
    )
    lens = [
        {"theta_E": theta_e, "e1": e1, "e2": e2, "center_x": cx, "center_y": cy},
        {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0},
    ]
    le1, le2 = param_util.phi_q2_ellipticity(
        phi + _uniform(rng, recipe.lens_light_dphi), _uniform(rng, recipe.lens_light_q)
    )
    lens_light = [
        {
            "amp": _uniform(rng, recipe.lens_light_amp),
            "R_sersic": _uniform(rng, recipe.lens_light_r),
            "n_sersic": _uniform(rng, recipe.lens_light_n),
            "e1": le1,
            "e2": le2,
            "center_x": cx,
            "center_y": cy,
        }
    ]
    se1, se2 = param_util.phi_q2_ellipticity(
        _uniform(rng, (0.0, math.pi)), _uniform(rng, recipe.source_q)
    )
    offset, offset_angle = _uniform(rng, recipe.source_offset), _uniform(rng, (0.0, 2 * math.pi))
    source = [
        {
            "amp": _uniform(rng, recipe.source_amp),
            "R_sersic": _uniform(rng, recipe.source_r),
            "n_sersic": _uniform(rng, recipe.source_n),
            "e1": se1,
            "e2": se2,
            "center_x": cx + offset * math.cos(offset_angle),
            "center_y": cy + offset * math.sin(offset_angle),
        }
    ]

    masses = np.zeros(0)
    if class_name == "sphere":
        masses = sample_masses(rng, recipe.n_subhalos, recipe)
        radius = _uniform(rng, recipe.subhalo_radius, recipe.n_subhalos) * theta_e
        angle = _uniform(rng, (0.0, 2 * math.pi), recipe.n_subhalos)
        xs, ys = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
    elif class_name == "vort":
        total = recipe.vortex_mass_scale * sample_masses(rng, recipe.n_subhalos, recipe).sum()
        masses = np.full(recipe.vortex_points, total / recipe.vortex_points)
        length = _uniform(rng, recipe.vortex_length)
        direction = _uniform(rng, (0.0, math.pi))
        radius = _uniform(rng, recipe.vortex_radius) * theta_e
        angle = _uniform(rng, (0.0, 2 * math.pi))
        along = np.linspace(-length / 2, length / 2, recipe.vortex_points)
        xs = cx + radius * math.cos(angle) + along * math.cos(direction)
        ys = cy + radius * math.sin(angle) + along * math.sin(direction)
    if masses.size:
        thetas = point_mass_theta_e(masses, recipe)
        for m_theta, x, y in zip(thetas, xs, ys, strict=True):
            lens.append({"theta_E": float(m_theta), "center_x": float(x), "center_y": float(y)})
        # The substructure's mass inside the ring is taken from the smooth halo, not added to
        # it: an SIS holds pi theta_E_SIE theta_E Sigma_crit inside theta_E, a point mass
        # pi theta_i^2 Sigma_crit, so the ring keeps its radius (mass outside it does not move
        # it) and the mass inside the arcs is no class signal.
        if recipe.compensation_sigma > 0:
            for m_theta, x, y in zip(thetas, xs, ys, strict=True):
                lens.append(
                    {
                        "amp": -math.pi * float(m_theta) ** 2,
                        "sigma": recipe.compensation_sigma,
                        "center_x": float(x),
                        "center_y": float(y),
                    }
                )
        else:
            inside = np.hypot(xs - cx, ys - cy) < theta_e
            lens[0]["theta_E"] = theta_e - float(np.sum(thetas[inside] ** 2)) / theta_e
    models = ["SIE", "SHEAR"] + ["POINT_MASS"] * masses.size
    models += ["GAUSSIAN"] * (len(lens) - len(models))
    return {
        "lens": lens,
        "lens_models": tuple(models),
        "source": source,
        "lens_light": lens_light,
        "masses": masses,
    }


def render(params: dict, rng: np.random.Generator | None, recipe: Recipe = RECIPE) -> np.ndarray:
    """Image of ``draw_parameters``' output in counts/s per pixel, shape (size, size).

    With ``rng`` given, Poisson and background noise are added (drawn from ``rng``); with
    None the noiseless model is returned.
    """
    model = _image_model(recipe, params["lens_models"])
    image = model.image(params["lens"], params["source"], params["lens_light"])
    if rng is not None:
        poisson_sigma = np.sqrt(np.abs(image) / recipe.exposure_time)
        image = image + rng.standard_normal(image.shape) * poisson_sigma
        image = image + rng.standard_normal(image.shape) * recipe.background_sigma
    return image


def normalize(image: np.ndarray) -> np.ndarray:
    """Min-max normalize to [0, 1] as float64, shaped (1, H, W) like the real set."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = image.min(), image.max()
    if not hi > lo:
        raise ValueError(f"cannot normalize a constant image (value {lo!r})")
    return ((image - lo) / (hi - lo))[np.newaxis]


def simulate_image(
    class_name: str, rng: np.random.Generator, recipe: Recipe = RECIPE
) -> np.ndarray:
    """One noisy, normalized image of class ``class_name``: float64 (1, 150, 150) in [0, 1]."""
    params = draw_parameters(class_name, rng, recipe)
    return normalize(render(params, rng, recipe))


# --- the data set -------------------------------------------------------------------------


def image_seed(seed: int, split: str, class_name: str, index: int) -> np.random.SeedSequence:
    """The seed of one image, independent of every other image and of the worker that makes it."""
    return np.random.SeedSequence([seed, SPLITS.index(split), CLASSES.index(class_name), index])


def is_valid_image(path: Path) -> bool:
    """True when ``path`` loads (no pickle) as a finite float64 (1, 150, 150) array in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return (
        isinstance(array, np.ndarray)
        and array.shape == IMAGE_SHAPE
        and array.dtype == np.float64
        and bool(np.isfinite(array).all())
        and array.min() >= 0.0
        and array.max() <= 1.0
    )


def _make_one(task: tuple[str, int, str, str, int, bool, Recipe]) -> str:
    """Worker: write one image unless a valid one is there. Returns "written" or "skipped"."""
    out, seed, split, class_name, index, force, recipe = task
    path = Path(out) / split / class_name / f"{index}.npy"
    if not force and path.exists() and is_valid_image(path):
        return "skipped"
    rng = np.random.default_rng(image_seed(seed, split, class_name, index))
    atomic_save_npy(path, simulate_image(class_name, rng, recipe))
    return "written"


def _check_counts(counts: dict[str, int]) -> dict[str, int]:
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected some of {SPLITS}")
    checked = {}
    for split in SPLITS:
        n = counts.get(split, 0)
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise ValueError(f"count of {split!r} is {n!r}; expected an integer")
        least = 0 if split == "test" else 1
        if n < least:
            raise ValueError(
                f"{split} count is {n}; expected at least {least} image(s) per class"
                + (" (use --test 0 for no test folder)" if split == "test" else "")
            )
        checked[split] = int(n)
    return checked


def _check_out(out: Path) -> None:
    """Refuse outputs that are files, unwritable, or hold (or are) the real data set."""
    real = Path(config.REAL_DATA_DIR).resolve()
    resolved = out.resolve()
    if resolved == real or real in resolved.parents:
        raise ValueError(
            f"output {str(out)!r} is the real data folder {str(real)!r}; simulated sets go "
            f"elsewhere (default {str(config.SIMULATED_DATA_DIR)!r}): real and simulated data "
            "are never mixed"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} is a file; expected a folder (new or simulated)")
    existing = out if out.exists() else next(p for p in out.resolve().parents if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {str(out)!r} is not writable ({str(existing)!r} is not)")
    if out.is_dir() and not (out / MANIFEST).exists():
        found = [s for s in SPLITS if (out / s).exists()]
        if found:
            raise ValueError(
                f"output {str(out)!r} already holds {found} but no {MANIFEST}: it looks like a "
                "real data set, and real and simulated data are never mixed; choose another --out"
            )


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not readable JSON ({error}); use --force") from error


def _surplus_files(out: Path, counts: dict[str, int]) -> list[Path]:
    """Images of an earlier, larger run of this simulator that the new counts do not cover."""
    surplus = []
    for split in SPLITS:
        for class_name in CLASSES:
            folder = out / split / class_name
            if folder.is_dir():
                surplus += [
                    p
                    for p in folder.glob("*.npy")
                    if p.stem.isdigit() and int(p.stem) > counts[split]
                ]
    return sorted(surplus)


def _versions() -> dict[str, str]:
    import lenstronomy

    return {
        "lenstronomy": lenstronomy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def simulate_dataset(
    out: str | Path,
    counts: dict[str, int],
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    recipe: Recipe = RECIPE,
) -> dict:
    """Write a simulated set to ``out`` and return its manifest (also ``out/manifest.json``).

    ``counts`` maps split to images per class: train and val at least 1, test at least 0 (0:
    no test folder, like the real set). Valid files already there are kept (an interrupted run
    resumes) unless ``force``; files of an earlier, larger run beyond the counts are removed.
    An existing set made with another seed or recipe is refused unless ``force``. ``workers``
    processes (default ``os.cpu_count()``) share the work; the files do not depend on it.
    Bad input raises ValueError before anything is written. The returned manifest also holds
    ``"_run"``: {"written", "skipped", "seconds", "workers"} of this call (not in the file).
    """
    out = Path(out)
    counts = _check_counts(dict(counts))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed is {seed!r}; expected a non-negative integer")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers is {workers!r}; expected a positive integer")
    _check_out(out)
    # JSON turns tuples into lists: compare with the manifest in its JSON form.
    recipe_dict = json.loads(json.dumps(dataclasses.asdict(recipe)))
    previous = _read_manifest(out)
    if previous is not None and not force:
        if previous.get("seed") != int(seed):
            differs = f"seed {previous.get('seed')!r}, not {int(seed)}"
        elif previous.get("recipe") != recipe_dict:
            changed = sorted(
                k for k in recipe_dict if (previous.get("recipe") or {}).get(k) != recipe_dict[k]
            )
            differs = f"another recipe (differs in {', '.join(changed)})"
        else:
            differs = ""
        if differs:
            raise ValueError(
                f"{str(out)!r} was simulated with {differs}; pass --force to rewrite it, or "
                "choose another --out"
            )

    manifest = {
        "simulator": "lensing.simulate",
        "description": "simulated strong-lensing images (lenstronomy); not the real DeepLense set",
        "seed": int(seed),
        "counts": counts,
        "classes": list(CLASSES),
        "image_shape": list(IMAGE_SHAPE),
        "dtype": "float64",
        "normalization": "per-image min-max to [0, 1]",
        "layout": "<split>/<class>/<i>.npy, i = 1..count",
        "recipe": recipe_dict,
        "versions": _versions(),
        "complete": False,
    }
    # Written first, so an interrupted run is still marked simulated and resumes cleanly.
    atomic_write_json(out / MANIFEST, manifest)
    for path in _surplus_files(out, counts):
        path.unlink()
    if counts["test"] == 0 and (out / "test").is_dir():
        for class_name in CLASSES:
            folder = out / "test" / class_name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not any((out / "test").iterdir()):
            (out / "test").rmdir()

    tasks = [
        (str(out), int(seed), split, class_name, index, force, recipe)
        for split in SPLITS
        for class_name in CLASSES
        for index in range(1, counts[split] + 1)
    ]
    start = time.perf_counter()
    results = _run_tasks(tasks, workers, progress)
    seconds = time.perf_counter() - start
    written = results.count("written")
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    manifest["_run"] = {
        "written": written,
        "skipped": results.count("skipped"),
        "seconds": seconds,
        "workers": workers,
    }
    return manifest


def _run_tasks(tasks: list, workers: int, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="simulate", unit="img", disable=not progress)
    results = []
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_make_one(task))
                bar.update()
        else:
            import multiprocessing

            # fork where the platform has it: workers start at once and a caller's script needs
            # no `if __name__ == "__main__"` guard (they only run numpy and lenstronomy code).
            # Elsewhere (Windows) spawn, the only choice.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            chunk = max(1, min(32, len(tasks) // (workers * 8)))
            with context.Pool(min(workers, len(tasks))) as pool:
                for result in pool.imap_unordered(_make_one, tasks, chunksize=chunk):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()
    return results


# --- command line -------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lensing simulate",
        description="Write a simulated lensing set (lenstronomy) in the real data's format.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=config.SIMULATED_DATA_DIR,
        help="output folder (not data/dataset)",
    )
    parser.add_argument("--train", type=int, required=True, help="train images per class (>= 1)")
    parser.add_argument("--val", type=int, required=True, help="val images per class (>= 1)")
    parser.add_argument(
        "--test", type=int, default=0, help="test images per class (0: no test folder)"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: every CPU core)"
    )
    parser.add_argument("--force", action="store_true", help="rewrite files that are there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def cli(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    counts = {"train": args.train, "val": args.val, "test": args.test}
    try:
        manifest = simulate_dataset(
            args.out, counts, args.seed, args.workers, args.force, progress=not args.quiet
        )
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    run = manifest["_run"]
    total = run["written"] + run["skipped"]
    rate = run["written"] / run["seconds"] if run["seconds"] > 0 else float("nan")
    print(
        f"{args.out}: {total} images ({run['written']} written, {run['skipped']} already there) "
        f"in {run['seconds']:.1f} s, {rate:.1f} images/s with {run['workers']} worker(s); "
        f"simulated data (see {args.out / MANIFEST})",
        file=sys.stderr,
    )
    return 0
