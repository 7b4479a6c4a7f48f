"""The pretraining corpus: every physics family, parameters drawn over wider ranges than the
presets', and a curriculum on the substructure's strength.

``python -m lensing pretrain`` trains on chunks of this corpus (:mod:`lensing.training.pretrain`).
One image of the corpus is fixed by ``(seed, chunk, class, index)`` and by how far the
curriculum has got (``progress``, 0 at the start, 1 at the end): from its own generator it
draws a family (``FAMILY_WEIGHTS``, less any held out), that family's preset widened by
``WIDE_RANGES``, a PSF width from ``PSF_FWHM``, a strength ``10^u`` times the preset's
default substructure mass with ``u`` uniform in :func:`strength_window`, and then the image
itself exactly as the writer's ``simulate_image`` makes it.

No leakage: a corpus image's generator is ``image_seed(CORPUS_SEED_BASE + seed, "train", ...)``
with the chunk number in the index, and ``simulate_dataset`` refuses every seed from
``CORPUS_SEED_BASE`` on, so no set made by the main job, a test or a benchmark can hold a
corpus image.
"""

from __future__ import annotations

import math

import numpy as np

from lensing.core.constants import CLASSES
from lensing.simulate.presets import PRESETS, Preset, get_preset
from lensing.simulate.writer import CORPUS_SEED_BASE, image_seed, simulate_image

# Share of each family in the corpus (renormalized over the families kept). test-i, the
# stand-in for the real set, gets half; legacy, the easy one, the least.
FAMILY_WEIGHTS = {"test-i": 0.5, "model-a": 0.3, "legacy": 0.2}
# Wider ranges than each preset's own (units as in lensing.simulate.presets).
WIDE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "test-i": {
        "theta_e": (1.00, 1.50),
        "lens_q": (0.60, 0.95),
        "ring_phi": (-0.30, 0.30),
        "lens_center": (-0.05, 0.05),
        "shear": (0.00, 0.12),
        "source_r": (0.12, 0.45),
        "source_n": (0.7, 2.5),
        "source_offset": (0.0, 0.35),
        "peak_counts": (400.0, 1500.0),
    },
    "model-a": {
        "theta_e": (1.00, 1.50),
        "shear": (0.00, 0.15),
        "source_r": (0.10, 0.50),
        "source_n": (0.5, 3.0),
        "peak_snr": (8.0, 50.0),
    },
    "legacy": {
        "theta_e": (0.90, 1.60),
        "shear": (0.00, 0.10),
        "source_r": (0.08, 0.40),
    },
}
SKY_COUNTS = (5.0, 20.0)  # test-i: counts of the flat sky, uniform (the preset: 10)
# PSF widths (arcsec), one drawn per image; a few values, so the cached models stay few.
PSF_FWHM = {
    "test-i": (0.15, 0.20, 0.25, 0.30, 0.35),
    "model-a": (0.05, 0.10, 0.15, 0.20),
    "legacy": (0.05, 0.10, 0.15, 0.20),
}
# The curriculum: the strength offset u (dex) is uniform in [low, high], which slides from
# STRONG to FINAL over the first CURRICULUM_SHARE of the run and stays at FINAL after it.
STRONG, FINAL = (0.3, 0.8), (-0.5, 0.2)
CURRICULUM_SHARE = 0.7


def strength_window(progress: float) -> tuple[float, float]:
    """The (low, high) strength offset in dex at ``progress`` in [0, 1] of the run."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress is {progress!r}; expected a number in [0, 1]")
    f = min(1.0, progress / CURRICULUM_SHARE)
    return tuple(s + (e - s) * f for s, e in zip(STRONG, FINAL, strict=True))


def families(hold_out: tuple[str, ...] = ()) -> dict[str, float]:
    """{family: probability} of the corpus without the families in ``hold_out``."""
    unknown = sorted(set(hold_out) - set(FAMILY_WEIGHTS))
    if unknown:
        raise ValueError(f"cannot hold out {unknown}; expected some of {list(FAMILY_WEIGHTS)}")
    kept = {name: w for name, w in FAMILY_WEIGHTS.items() if name not in hold_out}
    if not kept:
        raise ValueError("every family is held out; keep at least one")
    total = sum(kept.values())
    return {name: w / total for name, w in kept.items()}


def corpus_preset(family: str, rng: np.random.Generator, strength_dex: float) -> Preset:
    """``family``'s preset, widened, with a drawn PSF and its strength times 10^strength_dex."""
    base = PRESETS[family]
    overrides: dict[str, object] = dict(WIDE_RANGES[family])
    psf = PSF_FWHM[family]
    overrides["psf_fwhm"] = psf[int(rng.integers(len(psf)))]
    scale = 10.0**strength_dex
    if family == "test-i":
        overrides["substructure_mass"] = base.substructure_mass * scale
        overrides["sky_counts"] = float(rng.uniform(*SKY_COUNTS))
    else:
        low, high = base.subhalo_mass
        overrides["subhalo_mass"] = (low * scale, high * scale)
    return get_preset(family, **overrides)


def corpus_image(
    seed: int,
    chunk: int,
    class_name: str,
    index: int,
    progress: float,
    hold_out: tuple[str, ...] = (),
) -> tuple[np.ndarray, str]:
    """One corpus image, float64 (1, 150, 150) in [0, 1], and the family it was drawn from."""
    if not 0 <= index < CHUNK_INDEX_SPAN:
        raise ValueError(f"index is {index!r}; expected 0 <= index < {CHUNK_INDEX_SPAN}")
    generator = np.random.default_rng(corpus_seed(seed, chunk, class_name, index))
    choice_rng, image_rng = generator.spawn(2)
    kept = families(hold_out)
    names = list(kept)
    family = names[int(choice_rng.choice(len(names), p=list(kept.values())))]
    low, high = strength_window(progress)
    preset = corpus_preset(family, choice_rng, float(choice_rng.uniform(low, high)))
    return simulate_image(class_name, image_rng, preset), family


# Images per class a chunk can hold: the chunk number and the index share one integer.
CHUNK_INDEX_SPAN = 1_000_000


def corpus_seed(seed: int, chunk: int, class_name: str, index: int) -> np.random.SeedSequence:
    """The generator seed of one corpus image: the writer's ``image_seed`` of the reserved base
    seed ``CORPUS_SEED_BASE + seed``, with the chunk folded into the image index."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed is {seed!r}; expected a non-negative integer")
    return image_seed(
        CORPUS_SEED_BASE + seed, "train", class_name, chunk * CHUNK_INDEX_SPAN + index
    )


def chunk_tasks(
    seed: int, chunk: int, per_class: int, progress: float, hold_out: tuple[str, ...]
) -> list[tuple]:
    """The arguments of every image of one chunk, class by class (label order)."""
    return [
        (seed, chunk, class_name, index, progress, hold_out)
        for class_name in CLASSES
        for index in range(per_class)
    ]


def make_task(task: tuple) -> tuple[np.ndarray, str]:
    """Worker: one corpus image as float16 (1, 150, 150) and its family."""
    image, family = corpus_image(*task)
    return image.astype(np.float16), family


def expected_strength(progress: float) -> float:
    """The mean strength factor 10^u at ``progress`` (for the plan and the model card)."""
    low, high = strength_window(progress)
    if math.isclose(low, high):
        return 10.0**low
    return (10.0**high - 10.0**low) / ((high - low) * math.log(10.0))


# Chunk numbers of the probe sets (one per family), far past any run's chunks.
PROBE_CHUNK = 900_000


def probe_images(seed: int, family: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed probe set of ``family``'s default preset from corpus seeds: float32 images
    (3 per_class, 1, 150, 150) and their labels, to follow the pretraining."""
    chunk = PROBE_CHUNK + list(FAMILY_WEIGHTS).index(family)
    preset = PRESETS[family]
    images, labels = [], []
    for label, class_name in enumerate(CLASSES):
        for index in range(per_class):
            rng = np.random.default_rng(corpus_seed(seed, chunk, class_name, index))
            images.append(simulate_image(class_name, rng, preset).astype(np.float32))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def describe(seed: int, hold_out: tuple[str, ...] = ()) -> dict:
    """The corpus in words and numbers, for the summary and the model card."""
    return {
        "families": families(hold_out),
        "wide_ranges": WIDE_RANGES,
        "sky_counts": SKY_COUNTS,
        "psf_fwhm": PSF_FWHM,
        "strength_dex": {"start": STRONG, "end": FINAL, "curriculum_share": CURRICULUM_SHARE},
        "base_seed": CORPUS_SEED_BASE + seed,
        "seeds": (
            f"image_seed({CORPUS_SEED_BASE + seed}, 'train', class, chunk * "
            f"{CHUNK_INDEX_SPAN} + index); probes: chunks {PROBE_CHUNK}+; simulate_dataset "
            f"refuses every base seed >= {CORPUS_SEED_BASE}"
        ),
    }
