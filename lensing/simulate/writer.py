"""The data set writer: layout, manifest, worker processes, resume, ``force``, atomic writes.

``simulate_dataset(out, counts, ...)`` writes ``out/<split>/<class>/<i>.npy`` (i = 1..count per
class), each a float64 array of shape (1, 150, 150) min-max normalized to [0, 1], and
``out/manifest.json`` (the preset's name and every parameter, the seed, the counts and the
library versions), which marks the folder as simulated: these images imitate the ML4SCI
DeepLense set in format and look, they are not that set.

Image i of class c in split s gets the generator
``np.random.default_rng(np.random.SeedSequence([seed, split_index, class_index, i]))``, so a
seed gives byte-identical files whatever the number of workers or the order they run in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from lensing.core import constants
from lensing.core.atomic import atomic_save_npy, atomic_write_json
from lensing.core.constants import CLASSES, IMAGE_SIZE, MANIFEST, SPLITS
from lensing.simulate.draw import draw_parameters
from lensing.simulate.physics import normalize, render
from lensing.simulate.presets import (
    DEFAULT_PRESET,
    PRESETS,
    Preset,
    TestIPreset,
    get_preset,
    preset_name,
)

IMAGE_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
# Base seeds from this one on belong to the pretraining corpus (lensing.simulate.corpus) and
# are refused here: no set a run, a test or a benchmark writes can share an image with it.
CORPUS_SEED_BASE = 1_000_000


def simulate_image(
    class_name: str, rng: np.random.Generator, preset: Preset = PRESETS[DEFAULT_PRESET]
) -> np.ndarray:
    """One noisy, normalized image of class ``class_name`` (one of CLASSES) drawn with ``rng``
    from ``preset`` (default: the default preset): float64 (1, size, size), min 0, max 1."""
    if isinstance(preset, TestIPreset):
        # Separate streams for the lens and for the noise: with one seed the three classes get
        # the same smooth lens and the same noise, and differ by the substructure alone.
        draw_rng, noise_rng = rng.spawn(2)
        return normalize(render(draw_parameters(class_name, draw_rng, preset), noise_rng, preset))
    params = draw_parameters(class_name, rng, preset)
    return normalize(render(params, rng, preset))


def image_seed(seed: int, split: str, class_name: str, index: int) -> np.random.SeedSequence:
    """The seed of one image, independent of every other image and of the worker that makes it.

    ``split``: one of SPLITS; ``class_name``: one of CLASSES; ``index``: 1-based file number.
    """
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


def _make_one(task: tuple[str, int, str, str, int, bool, Preset]) -> str:
    """Worker: write one image unless a valid one is there. Returns "written" or "skipped"."""
    out, seed, split, class_name, index, force, preset = task
    path = Path(out) / split / class_name / f"{index}.npy"
    if not force and path.exists() and is_valid_image(path):
        return "skipped"
    rng = np.random.default_rng(image_seed(seed, split, class_name, index))
    atomic_save_npy(path, simulate_image(class_name, rng, preset))
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
    real = Path(constants.REAL_DATA_DIR).resolve()
    resolved = out.resolve()
    if resolved == real or real in resolved.parents:
        raise ValueError(
            f"output {str(out)!r} is the real data folder {str(real)!r}; simulated sets go "
            f"elsewhere (default {str(constants.SIMULATED_DATA_DIR)!r}): real and simulated data "
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


def _check_previous(out: Path, seed: int, name: str, parameters: dict) -> None:
    """Refuse a folder simulated with another seed, preset or parameters (no ``force``)."""
    previous = _read_manifest(out)
    if previous is None:
        return
    # Sets from before presets existed name no preset: they were made with "legacy".
    before = previous.get("preset", "legacy")
    if previous.get("seed") != seed:
        differs = f"seed {previous.get('seed')!r}, not {seed}"
    elif before != name:
        differs = f"preset {before!r}, not {name!r}"
    # "parameters" was called "recipe" in manifests written by earlier versions.
    elif previous.get("parameters", previous.get("recipe")) != parameters:
        old = previous.get("parameters", previous.get("recipe")) or {}
        changed = sorted(k for k in parameters if old.get(k) != parameters[k])
        differs = f"other preset parameters (differing in {', '.join(changed)})"
    else:
        return
    raise ValueError(
        f"{str(out)!r} was simulated with {differs}; pass --force to rewrite it, or choose "
        "another --out"
    )


def _remove_surplus(out: Path, counts: dict[str, int]) -> None:
    """Delete images of an earlier, larger run that the new counts do not cover, and an empty
    test folder when the new count is 0."""
    for split in SPLITS:
        for class_name in CLASSES:
            folder = out / split / class_name
            if not folder.is_dir():
                continue
            for path in folder.glob("*.npy"):
                if path.stem.isdigit() and int(path.stem) > counts[split]:
                    path.unlink()
    if counts["test"] == 0 and (out / "test").is_dir():
        for class_name in CLASSES:
            folder = out / "test" / class_name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not any((out / "test").iterdir()):
            (out / "test").rmdir()


def _versions() -> dict[str, str]:
    import lenstronomy

    return {
        "lenstronomy": lenstronomy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _manifest(seed: int, counts: dict, name: str, parameters: dict) -> dict:
    return {
        "simulator": "lensing.simulate",
        "description": "simulated strong-lensing images (lenstronomy); not the real DeepLense set",
        "preset": name,
        "seed": seed,
        "counts": counts,
        "classes": list(CLASSES),
        "image_shape": list(IMAGE_SHAPE),
        "dtype": "float64",
        "normalization": "per-image min-max to [0, 1]",
        "layout": "<split>/<class>/<i>.npy, i = 1..count",
        "parameters": parameters,
        "versions": _versions(),
        "complete": False,
    }


def _resolve_preset(preset: str | Preset) -> tuple[str, Preset]:
    if isinstance(preset, str):
        return preset, get_preset(preset)
    return preset_name(preset), preset


def simulate_dataset(
    out: str | Path,
    counts: dict[str, int],
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    preset: str | Preset = DEFAULT_PRESET,
) -> dict:
    """Write a simulated set to ``out`` and return its manifest (also ``out/manifest.json``).

    ``counts`` maps split to images per class: train and val at least 1, test at least 0 (0:
    no test folder, like the real set). ``seed``: non-negative int. ``preset``: a name of
    PRESETS or a preset object (e.g. ``get_preset("test-i", substructure_mass=...)``). Valid
    files already there are kept (an interrupted run resumes) unless ``force``; files of an
    earlier, larger run beyond the counts are removed. An existing set made with another seed,
    preset or parameters is refused unless ``force``. ``workers`` processes (default
    ``os.cpu_count()``) share the work; the files do not depend on it. Bad input raises
    ValueError before anything is written. The returned manifest also holds ``"_run"``:
    {"written", "skipped", "seconds", "workers"} of this call (not in the file).
    """
    out = Path(out)
    counts = _check_counts(dict(counts))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed is {seed!r}; expected a non-negative integer")
    if seed >= CORPUS_SEED_BASE:
        raise ValueError(
            f"seed is {seed}; seeds from {CORPUS_SEED_BASE:,} on are reserved for the "
            "pretraining corpus, so that no data set shares an image with it; expected a "
            "smaller seed"
        )
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers is {workers!r}; expected a positive integer")
    name, preset = _resolve_preset(preset)
    _check_out(out)
    # JSON turns tuples into lists: compare with the manifest in its JSON form.
    parameters = json.loads(json.dumps(dataclasses.asdict(preset)))
    if not force:
        _check_previous(out, int(seed), name, parameters)
    manifest = _manifest(int(seed), counts, name, parameters)
    # Written first, so an interrupted run is still marked simulated and resumes cleanly.
    atomic_write_json(out / MANIFEST, manifest)
    _remove_surplus(out, counts)
    tasks = [
        (str(out), int(seed), split, class_name, index, force, preset)
        for split in SPLITS
        for class_name in CLASSES
        for index in range(1, counts[split] + 1)
    ]
    start = time.perf_counter()
    results = _run_tasks(tasks, workers, progress)
    seconds = time.perf_counter() - start
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    manifest["_run"] = {
        "written": results.count("written"),
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
