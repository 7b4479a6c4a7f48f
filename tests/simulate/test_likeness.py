"""The default preset's look (integer counts, dark centre, ring along x, equal class means),
the likeness check that measures it, and the separability benchmark."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lensing.cli import main as lensing_main
from lensing.core.constants import CLASSES
from lensing.core.image_stats import count_grid, on_count_grid
from lensing.simulate import (
    PRESETS,
    draw_parameters,
    get_preset,
    likeness,
    likeness_table,
    render,
    simulate_dataset,
    simulate_image,
)
from lensing.simulate.likeness import (
    REAL,
    class_mean_tolerance,
    sample_statistics,
    within,
)

TEST_I = PRESETS["test-i"]
KEYS = set(REAL) | {"data", "n_images", "mean_spread", "std_spread", "class_means"}


def cli(argv: list[str]) -> int:
    """``python -m lensing simulate ARGV``."""
    return lensing_main(["simulate", *argv])


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("likeness")
    counts = {"train": 3, "val": 1, "test": 1}
    for preset in ("test-i", "legacy"):
        simulate_dataset(root / preset, counts, seed=3, workers=1, progress=False, preset=preset)
    return {name: root / name for name in ("test-i", "legacy")}


def test_likeness_returns_every_statistic(sets):
    report = likeness(sets["test-i"])
    assert set(report) == KEYS
    assert report["n_images"] == 3 * len(CLASSES)
    assert set(report["class_means"]) == set(CLASSES)
    assert set(within(report)) == set(REAL)


def test_test_i_looks_like_the_real_set_where_legacy_does_not(sets):
    real_like, legacy = likeness(sets["test-i"]), likeness(sets["legacy"])
    # Integer counts, normalized: every image is a multiple of 1/k with k near the real 809.
    assert real_like["integer_fraction"] == 1.0 and 750 < real_like["k"] < 860
    assert legacy["integer_fraction"] == 0.0
    assert real_like["min0_max1"] == legacy["min0_max1"] == 1.0
    # No lens light: a dark centre in test-i, the lens galaxy's bright core in legacy.
    assert real_like["centre"] < 0.06 < legacy["centre"]
    assert 0.005 < real_like["corner"] < 0.02
    assert real_like["ring_x"] > real_like["ring_y"]
    assert 0.04 < real_like["mean"] < 0.09 and 0.08 < real_like["std"] < 0.16


def test_n_limits_the_images_read(sets):
    assert likeness(sets["test-i"], n=1)["n_images"] == len(CLASSES)
    with pytest.raises(ValueError, match="expected a positive integer"):
        likeness(sets["test-i"], n=0)
    with pytest.raises(ValueError, match="expected"):
        likeness(sets["test-i"] / "nowhere")


def test_count_scale_finds_the_counts_of_a_normalized_image():
    counts = np.random.default_rng(0).poisson(10.0, (150, 150)).astype(float)
    counts[75, 75] = 807 + counts.min()
    image = (counts - counts.min()) / (counts.max() - counts.min())
    k, off_grid = count_grid(image[np.newaxis])
    assert (k[0], bool(on_count_grid(off_grid)[0])) == (807.0, True)
    noisy = image + np.random.default_rng(1).normal(0, 1e-4, image.shape)
    assert bool(on_count_grid(count_grid(np.clip(noisy, 0, 1)[np.newaxis])[1])[0]) is False


def test_table_marks_rows_in_and_out_of_the_real_range(sets):
    report = likeness(sets["legacy"])
    table = likeness_table(report)
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(REAL) + 1
    row = next(line for line in table.splitlines() if line.startswith("| centre"))
    assert row.endswith("| NO |")
    assert "class means: no" in table


def test_class_means_are_judged_against_sampling_noise():
    report = {"n_images": 300, "mean_spread": 0.009, "class_means": dict.fromkeys(CLASSES, 0.06)}
    assert class_mean_tolerance(report) == pytest.approx(3 * 2**0.5 * 0.009 / 10)
    many = {**report, "n_images": 30_000}  # so many images that noise explains nothing
    assert class_mean_tolerance(many) == REAL["class_mean_spread"][2]


def test_test_i_images_are_min_max_normalized_integer_counts(sets):
    for path in sorted(sets["test-i"].glob("*/*/*.npy")):
        image = np.load(path)
        assert image.min() == 0.0 and image.max() == 1.0
        k = 1.0 / np.diff(np.unique(image)).min()  # one count, normalized
        assert 700 < k < 900  # a peak of ~770 counts over a sky of ~10
        assert_allclose(image * round(k), np.round(image * round(k)), atol=1e-9)


def test_test_i_has_no_lens_light_and_a_dark_centre():
    params = draw_parameters("no", np.random.default_rng(2), TEST_I)
    assert params["lens_light"] == []
    image = render(params, None, TEST_I)  # expected counts, no noise
    yy, xx = np.indices(image.shape) - 74.5
    radius = np.hypot(yy, xx)
    centre, ring = image[radius < 3].mean(), image[(radius > 20) & (radius < 30)].max()
    assert TEST_I.sky_counts < centre < TEST_I.sky_counts + 0.1 * (ring - TEST_I.sky_counts)
    assert_allclose(ring, TEST_I.sky_counts + params["peak_counts"], rtol=1e-9)


def test_test_i_ring_is_elongated_along_x():
    images = [simulate_image("no", np.random.default_rng(s), TEST_I)[0] for s in range(6)]
    stats = sample_statistics(np.stack(images), np.zeros(6, dtype=int))
    assert stats["ring_x"] >= stats["ring_y"] + 3
    # Six images: an arc or two pull the centroid of the light a few pixels off the axis.
    assert 21 <= stats["ring_radius"] <= 27 and stats["ring_offset"] < 4


SEEDS = 30  # smooth lenses; each is drawn once per class


@pytest.fixture(scope="module")
def class_images() -> dict[str, np.ndarray]:
    """Per class, the default preset's images of seeds 0..SEEDS-1, (SEEDS, 150, 150).

    One seed draws one smooth lens, shared by the three classes: image s of every class has
    the same lens and source, and only the substructure differs.
    """
    return {
        name: np.stack([simulate_image(name, np.random.default_rng(s))[0] for s in range(SEEDS)])
        for name in CLASSES
    }


def class_mean_failures(class_images: dict[str, np.ndarray]) -> list[str]:
    """Why the classes' mean brightness differs by more than the likeness check allows (empty
    when it does not).

    The allowance is ``class_mean_tolerance``'s: the real set's range (its classes differ by
    0.0005; at most 0.002) or, when larger, 3 standard errors of the difference of two class
    means. It is applied twice: as the likeness check does (``within``, independent images) and
    to the seed-paired differences, whose standard error is std(d) / sqrt(SEEDS): fed to
    ``class_mean_tolerance`` as a per-image spread of std(d) / sqrt(2). The paired form sees a
    shift of a few thousandths that 30 independent images per class would hide in their noise.
    """
    images = np.concatenate([class_images[name] for name in CLASSES])
    labels = np.repeat(np.arange(len(CLASSES)), [len(class_images[n]) for n in CLASSES])
    report = sample_statistics(images, labels)
    failures = []
    if not within(report)["class_mean_spread"]:
        failures.append(
            f"spread {report['class_mean_spread']:.4f} > {class_mean_tolerance(report):.4f}"
        )
    means = {name: class_images[name].mean(axis=(1, 2)) for name in CLASSES}
    for a, b in itertools.combinations(CLASSES, 2):
        d = means[a] - means[b]
        paired = {"n_images": 2 * len(d), "class_means": {a: 0, b: 0}, "mean_spread": d.std()}
        paired["mean_spread"] /= np.sqrt(2)
        if abs(d.mean()) > class_mean_tolerance(paired):
            failures.append(f"{a} - {b}: {d.mean():+.4f} > {class_mean_tolerance(paired):.4f}")
    return failures


def test_test_i_class_means_are_equal(class_images):
    assert class_mean_failures(class_images) == []
    assert all(0.04 < class_images[name].mean() < 0.09 for name in CLASSES)


@pytest.mark.parametrize("brighter", CLASSES)
def test_a_class_brighter_than_the_others_fails_the_check(class_images, brighter):
    # 5 % more light in one class (~0.003 on its mean: what subhalos adding light unchecked
    # would do) is what the check exists to catch.
    changed = {**class_images, brighter: np.clip(class_images[brighter] * 1.05, 0, 1)}
    failures = class_mean_failures(changed)
    assert failures and all(brighter in line for line in failures), failures


def test_separability_benchmark_sees_a_trivial_signal_and_runs_on_simulated_data(
    sets, tmp_path, capsys, monkeypatch
):
    # benchmarks/ is a top-level folder beside the package, importable from the repository root.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from benchmarks.separability import main, measure_separability

    # Classes that differ in mean brightness: pixel statistics must tell them apart.
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("val", 10)):
        for k, name in enumerate(CLASSES):
            for i in range(1, n + 1):
                image = np.clip(rng.normal(0.3 + 0.2 * k, 0.1, (1, 150, 150)), 0, 1)
                (tmp_path / "easy" / split / name).mkdir(parents=True, exist_ok=True)
                np.save(tmp_path / "easy" / split / name / f"{i}.npy", image)
    easy = measure_separability(tmp_path / "easy")
    assert easy["n_train"] == 90
    assert easy["results"]["pixel-stats"]["val"]["auc_macro"] > 0.95
    assert set(easy["results"]) == {"pixel-stats", "pca-20"}

    report = measure_separability(sets["test-i"])  # 3 per class: PCA falls back to 8 components
    assert set(report["results"]["pixel-stats"]) == {"val", "test"}
    for scores in report["results"]["pixel-stats"].values():
        assert set(scores["auc_per_class"]) == set(CLASSES)
    assert main(["--data", str(sets["test-i"]), "--json", str(tmp_path / "report.json")]) == 0
    assert "| pixel-stats | val |" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["n_train"] == 9


def test_test_i_substructure_strength_is_one_knob():
    def change(mass: float, name: str) -> float:
        preset = get_preset("test-i", substructure_mass=mass)
        smooth = render(draw_parameters("no", np.random.default_rng(4), preset), None, preset)
        other = render(draw_parameters(name, np.random.default_rng(4), preset), None, preset)
        return float(np.abs(other - smooth).max())

    for name in ("sphere", "vort"):
        assert change(0.0, name) == 0.0
        assert 0 < change(1e9, name) < change(1e10, name)
    params = draw_parameters("sphere", np.random.default_rng(4), TEST_I)
    assert params["lens_models"].count("POINT_MASS") == TEST_I.n_subhalos
    # Within the mass range, widened by the per-lens scatter (tests/simulate/test_test_i.py).
    spread = 10**TEST_I.strength_dex
    low = TEST_I.subhalo_mass_min_fraction * TEST_I.substructure_mass / spread
    assert (
        (params["masses"] >= low) & (params["masses"] <= TEST_I.substructure_mass * spread)
    ).all()
    vortex = draw_parameters("vort", np.random.default_rng(4), TEST_I)
    assert vortex["lens_models"].count("POINT_MASS") == TEST_I.vortex_points


def test_cli_check_prints_the_likeness_table(sets, capsys):
    assert cli(["--check", str(sets["test-i"]), "--check-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "| per-image mean (median) |" in out and "real Test I" in out
    assert "6 train images" in out
