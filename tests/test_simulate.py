"""The lenstronomy simulator: layout, format, determinism, resume, bad input, physics units."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lensing import config, simulate
from lensing.config import CLASSES, MANIFEST
from lensing.simulate import (
    RECIPE,
    cli,
    draw_parameters,
    point_mass_theta_e,
    sample_masses,
    sigma_crit_angle,
    simulate_dataset,
    simulate_image,
)

TINY = {"train": 2, "val": 1, "test": 1}


def make(out: Path, counts=None, **kwargs) -> dict:
    kwargs.setdefault("workers", 1)
    return simulate_dataset(out, counts or TINY, progress=False, **kwargs)


def npy_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.npy"))


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: (root / p).read_bytes() for p in npy_files(root)}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "simulated"
    make(out)
    return out


def test_layout_dtype_shape_and_range(tiny_set):
    expected = sorted(
        Path(split) / name / f"{i}.npy"
        for split, n in TINY.items()
        for name in CLASSES
        for i in range(1, n + 1)
    )
    assert npy_files(tiny_set) == expected
    for path in expected:
        image = np.load(tiny_set / path, allow_pickle=False)
        assert image.dtype == np.float64 and image.shape == (1, 150, 150)
        assert image.min() == 0.0 and image.max() == 1.0
        assert np.isfinite(image).all()


def test_manifest_records_recipe_seed_counts_and_versions(tiny_set):
    import lenstronomy

    manifest = json.loads((tiny_set / MANIFEST).read_text())
    assert manifest["seed"] == 0
    assert manifest["counts"] == TINY
    assert manifest["classes"] == list(CLASSES)
    assert manifest["image_shape"] == [1, 150, 150] and manifest["dtype"] == "float64"
    assert manifest["recipe"] == json.loads(json.dumps(dataclasses.asdict(RECIPE)))
    assert manifest["versions"]["lenstronomy"] == lenstronomy.__version__
    assert manifest["versions"]["numpy"] == np.__version__
    assert manifest["complete"] is True
    assert "not the real" in manifest["description"]


def test_lensing_dataset_loads_every_file(tiny_set):
    from lensing.data import LensingDataset, data_kind

    assert data_kind(tiny_set) == "simulated"
    for split, n in TINY.items():
        dataset = LensingDataset(tiny_set, split, progress=False)
        assert dataset.skipped == []
        assert len(dataset) == n * len(CLASSES)
        assert dataset.class_counts() == {name: n for name in CLASSES}
        assert dataset.kind == "simulated"


def test_same_bytes_whatever_the_number_of_workers(tmp_path):
    counts = {"train": 2, "val": 1, "test": 0}
    make(tmp_path / "one", counts, seed=7, workers=1)
    make(tmp_path / "two", counts, seed=7, workers=2)
    one, two = snapshot(tmp_path / "one"), snapshot(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 9
    assert one == two
    make(tmp_path / "other", counts, seed=8, workers=1)
    other = snapshot(tmp_path / "other")
    assert all(other[p] != one[p] for p in one)


def test_images_differ_between_classes_and_indices(tiny_set):
    first = {name: np.load(tiny_set / "train" / name / "1.npy") for name in CLASSES}
    assert not np.array_equal(first["no"], first["sphere"])
    assert not np.array_equal(first["no"], first["vort"])
    second = np.load(tiny_set / "train" / "no" / "2.npy")
    assert not np.array_equal(first["no"], second)


def test_resume_keeps_valid_files_and_replaces_bad_ones(tmp_path):
    out = tmp_path / "sim"
    make(out)
    before = snapshot(out)
    mtimes = {p: (out / p).stat().st_mtime_ns for p in before}
    truncated = Path("train/sphere/2.npy")
    wrong_shape = Path("val/vort/1.npy")
    (out / truncated).write_bytes(before[truncated][:100])
    np.save(out / wrong_shape, np.zeros((150, 150)))
    run = make(out)["_run"]
    assert run["written"] == 2 and run["skipped"] == len(before) - 2
    assert snapshot(out) == before  # the repaired files are the same bytes as the first time
    for path in before.keys() - {truncated, wrong_shape}:
        assert (out / path).stat().st_mtime_ns == mtimes[path]


def test_force_rewrites_every_file(tmp_path):
    out = tmp_path / "sim"
    make(out)
    before = snapshot(out)
    run = make(out, force=True)["_run"]
    assert run["written"] == len(before) and run["skipped"] == 0
    assert snapshot(out) == before


def test_growing_and_shrinking_a_set(tmp_path):
    out = tmp_path / "sim"
    make(out, {"train": 1, "val": 1, "test": 1})
    first = snapshot(out)
    run = make(out, {"train": 3, "val": 1, "test": 1})["_run"]
    assert run["written"] == 2 * len(CLASSES)
    grown = snapshot(out)
    assert all(grown[p] == first[p] for p in first)
    make(out, {"train": 2, "val": 1, "test": 0})
    assert not (out / "test").exists()
    assert sorted(p.name for p in (out / "train" / "no").iterdir()) == ["1.npy", "2.npy"]
    assert json.loads((out / MANIFEST).read_text())["counts"] == {"train": 2, "val": 1, "test": 0}


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"train": 0, "val": 1, "test": 0}, "train count is 0"),
        ({"train": 1, "val": -1, "test": 0}, "val count is -1"),
        ({"train": 1, "val": 1, "test": -2}, "test count is -2"),
        ({"train": 1.5, "val": 1, "test": 0}, "expected an integer"),
        ({"train": 1, "val": 1, "dev": 1}, "unknown split"),
    ],
)
def test_bad_counts_write_nothing(tmp_path, counts, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "sim", counts)
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_file_or_under_a_file(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    with pytest.raises(ValueError, match="is a file"):
        make(a_file)
    with pytest.raises(ValueError, match="not writable"):
        make(a_file / "sim")
    assert a_file.read_text() == "keep me" and list(tmp_path.iterdir()) == [a_file]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            make(locked / "sim")
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_refuses_the_real_data_folder(tmp_path, monkeypatch):
    real = tmp_path / "data" / "dataset"
    monkeypatch.setattr(config, "REAL_DATA_DIR", real)
    for out in (real, real / "sub", tmp_path / "data" / "x" / ".." / "dataset"):
        with pytest.raises(ValueError, match="real data folder"):
            make(out)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_folder_that_looks_like_real_data(tmp_path):
    (tmp_path / "set" / "train" / "no").mkdir(parents=True)
    with pytest.raises(ValueError, match="looks like a real data set"):
        make(tmp_path / "set")
    assert not (tmp_path / "set" / MANIFEST).exists()


def test_refuses_another_seed_unless_forced(tmp_path):
    out = tmp_path / "sim"
    make(out, seed=1)
    before = snapshot(out)
    with pytest.raises(ValueError, match="seed 1, not 2"):
        make(out, seed=2)
    assert snapshot(out) == before
    make(out, seed=2, force=True)
    assert json.loads((out / MANIFEST).read_text())["seed"] == 2
    assert snapshot(out) != before


def test_cli_writes_a_set_and_reports(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["--out", str(out), "--train", "1", "--val", "1", "--test", "0", "--quiet"]
    assert cli([*argv, "--workers", "1"]) == 0
    assert len(npy_files(out)) == 2 * len(CLASSES)
    assert "6 written" in capsys.readouterr().err
    assert cli(argv) == 0
    assert "6 already there" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--train", "0", "--val", "1"],
        ["--train", "1", "--val", "1", "--test", "-1"],
        ["--train", "1", "--val", "1", "--workers", "0"],
        ["--train", "1", "--val", "1", "--seed", "-3"],
    ],
)
def test_cli_bad_input_exits_with_a_message_and_writes_nothing(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--out", str(tmp_path / "sim"), "--quiet", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_simulate_image_is_reproducible_and_normalized():
    for name in CLASSES:
        a = simulate_image(name, np.random.default_rng(3))
        b = simulate_image(name, np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (1, 150, 150) and a.dtype == np.float64
        assert a.min() == 0.0 and a.max() == 1.0
    with pytest.raises(ValueError, match="unknown class 'blob'"):
        simulate_image("blob", np.random.default_rng(0))


def test_substructure_per_class():
    params = {name: draw_parameters(name, np.random.default_rng(5)) for name in CLASSES}
    assert len(params["no"]["lens"]) == 2 and params["no"]["masses"].size == 0
    assert params["sphere"]["lens_models"].count("POINT_MASS") == RECIPE.n_subhalos
    assert params["vort"]["lens_models"].count("POINT_MASS") == RECIPE.vortex_points
    # Each clump's mass is taken from the smooth halo by a negative Gaussian of the same mass.
    assert params["sphere"]["lens_models"].count("GAUSSIAN") == RECIPE.n_subhalos
    sphere = params["sphere"]["lens"]
    for clump, hole in zip(sphere[2:27], sphere[27:], strict=True):
        assert_allclose(hole["amp"], -math.pi * clump["theta_E"] ** 2)
        assert (hole["center_x"], hole["center_y"]) == (clump["center_x"], clump["center_y"])
    # The smooth part is drawn first, with the same random numbers in every class.
    assert params["no"]["source"] == params["sphere"]["source"] == params["vort"]["source"]
    lo, hi = RECIPE.subhalo_mass
    masses = params["sphere"]["masses"]
    assert ((masses >= lo) & (masses <= hi)).all()
    vortex = params["vort"]["masses"]
    assert np.ptp(vortex) == 0 and lo * RECIPE.n_subhalos <= vortex.sum() <= hi * RECIPE.n_subhalos
    # The vortex's point masses lie on one straight line.
    line = params["vort"]["lens"][2 : 2 + RECIPE.vortex_points]
    points = np.array([[k["center_x"], k["center_y"]] for k in line])
    steps = np.diff(points, axis=0)
    cross = steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0]
    assert_allclose(cross, 0.0, atol=1e-12)
    length = np.hypot(*(points[-1] - points[0]))
    assert RECIPE.vortex_length[0] <= length <= RECIPE.vortex_length[1]


def test_without_compensation_the_mass_inside_the_ring_comes_from_the_main_lens():
    recipe = dataclasses.replace(RECIPE, compensation_sigma=0.0)
    rng_draw = draw_parameters("sphere", np.random.default_rng(11), recipe)
    smooth = draw_parameters("no", np.random.default_rng(11), recipe)
    theta_e = smooth["lens"][0]["theta_E"]
    main = rng_draw["lens"][0]
    subhalos = rng_draw["lens"][2:]
    inside = [
        k["theta_E"] ** 2
        for k in subhalos
        if math.hypot(k["center_x"] - main["center_x"], k["center_y"] - main["center_y"]) < theta_e
    ]
    # Mean convergence 1 inside theta_E: SIS part theta_SIE * theta_E plus the point masses.
    assert_allclose(main["theta_E"] * theta_e + sum(inside), theta_e**2)


def test_mass_function_follows_the_power_law():
    masses = sample_masses(np.random.default_rng(0), 200_000)
    lo, hi = RECIPE.subhalo_mass
    p = 1 - RECIPE.mass_function_slope
    for m in (3 * lo, 0.1 * hi):
        expected_cdf = (m**p - lo**p) / (hi**p - lo**p)
        assert_allclose((masses < m).mean(), expected_cdf, atol=0.005)


def test_point_mass_einstein_radius_units():
    from astropy import constants, units
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=RECIPE.hubble_constant, Om0=RECIPE.omega_matter)
    d_l = cosmo.angular_diameter_distance(RECIPE.z_lens)
    d_s = cosmo.angular_diameter_distance(RECIPE.z_source)
    d_ls = cosmo.angular_diameter_distance(RECIPE.z_lens, RECIPE.z_source)
    # theta_E^2 = 4 G M D_ls / (c^2 D_l D_s) for a point mass M.
    mass = 1e10 * units.M_sun
    theta = np.sqrt(4 * constants.G * mass * d_ls / (constants.c**2 * d_l * d_s)).decompose()
    expected = (theta.value * units.rad).to(units.arcsec).value
    # lenstronomy carries its own G and M_sun, a few 1e-5 off astropy's.
    assert_allclose(point_mass_theta_e(1e10), expected, rtol=1e-3)
    assert_allclose(math.pi * point_mass_theta_e(2e9) ** 2 * sigma_crit_angle(), 2e9)


def test_no_temporary_files_left(tiny_set):
    assert not [p for p in tiny_set.rglob("*") if p.name.endswith(".tmp")]


def test_is_valid_image(tmp_path):
    good = simulate_image("no", np.random.default_rng(0))
    cases = {
        "good": good,
        "float32": good.astype(np.float32),
        "flat": good[0],
        "out_of_range": good * 2,
        "nan": np.where(good > 0.5, np.nan, good),
    }
    for name, array in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "empty.npy").write_bytes(b"")
    valid = {p.stem: simulate.is_valid_image(p) for p in tmp_path.glob("*.npy")}
    assert valid == {
        "good": True,
        "float32": False,
        "flat": False,
        "out_of_range": False,
        "nan": False,
        "empty": False,
    }


def test_separability_benchmark_sees_a_trivial_signal_and_runs_on_simulated_data(
    tiny_set, tmp_path, capsys, monkeypatch
):
    # benchmarks/ is a top-level folder beside the package, importable from the repository root.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
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

    report = measure_separability(tiny_set)  # 2 per class: PCA falls back to 5 components
    assert set(report["results"]["pixel-stats"]) == {"val", "test"}
    for scores in report["results"]["pixel-stats"].values():
        assert set(scores["auc_per_class"]) == set(CLASSES)
    assert main(["--data", str(tiny_set), "--json", str(tmp_path / "report.json")]) == 0
    assert "| pixel-stats | val |" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["n_train"] == 6
