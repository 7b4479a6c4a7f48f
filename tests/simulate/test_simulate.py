"""The simulator: layout, format, determinism, resume, bad input, units, presets, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from lensing import simulate
from lensing.cli import main as lensing_main
from lensing.core import constants
from lensing.core.constants import CLASSES, MANIFEST
from lensing.simulate import (
    DEFAULT_PRESET,
    PRESETS,
    draw_parameters,
    get_preset,
    point_mass_theta_e,
    sample_masses,
    sigma_crit_angle,
    simulate_dataset,
    simulate_image,
)

TINY = {"train": 2, "val": 1, "test": 1}
LEGACY = PRESETS["legacy"]
TEST_I = PRESETS["test-i"]


def cli(argv: list[str]) -> int:
    """``python -m lensing simulate ARGV``."""
    return lensing_main(["simulate", *argv])


# sha256 of the array bytes of legacy images (seed 0), computed with the simulator as it was
# before presets existed: the legacy preset must keep giving these exact images.
LEGACY_SHA256 = {
    ("train", "no", 1): "a427d53d84aefb83f7b49805ac04e1e25750191c8f341a0efb2306dfbe724885",
    ("train", "sphere", 2): "5b87ffb67f0b5f46c4e9baa70a725cc83e6d6ba93c72bd1cb528dbb710d45267",
    ("val", "vort", 1): "7a786244d00c40d6c8ea52d2ef6ac27e527383beae13520e5db901a6e9eb4885",
    ("test", "sphere", 3): "9a09b2d66dd36829c3fc138d2b4e70c7fb939f2f925056b0560d0b0b0b6dd794",
}


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
    assert not [p for p in tiny_set.rglob("*") if p.name.endswith(".tmp")]


def test_manifest_records_preset_seed_counts_and_versions(tiny_set):
    import lenstronomy

    manifest = json.loads((tiny_set / MANIFEST).read_text())
    assert manifest["preset"] == DEFAULT_PRESET == "test-i"
    assert manifest["seed"] == 0
    assert manifest["counts"] == TINY
    assert manifest["classes"] == list(CLASSES)
    assert manifest["image_shape"] == [1, 150, 150] and manifest["dtype"] == "float64"
    assert manifest["parameters"] == json.loads(json.dumps(dataclasses.asdict(TEST_I)))
    assert manifest["parameters"]["substructure_mass"] == TEST_I.substructure_mass
    assert manifest["versions"]["lenstronomy"] == lenstronomy.__version__
    assert manifest["versions"]["numpy"] == np.__version__
    assert manifest["complete"] is True
    assert "not the real" in manifest["description"]


def test_lensing_dataset_loads_every_file(tiny_set):
    from lensing.data.dataset import LensingDataset, provenance

    assert provenance(tiny_set) == "simulated"
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


NOBODY = 65534  # uid and gid of "nobody", as whom as_unprivileged runs


def refusal(out: Path) -> str:
    """``make(out)``'s ValueError message, or "written" when it writes the set."""
    try:
        make(out)
    except ValueError as err:
        return str(err)
    return "written"


def test_read_only_output_folder(tmp_path, as_unprivileged):
    make(tmp_path / "warm")  # as root: loads the simulator's imports before the fork
    # A folder an unprivileged user reaches (pytest's sit under root's 0700 one when root runs).
    top = Path(tempfile.mkdtemp(prefix="lensing-perm-"))
    try:
        top.chmod(0o755)
        locked, writable = top / "locked", top / "writable"
        for folder in (locked, writable):
            folder.mkdir()
            if os.geteuid() == 0:
                os.chown(folder, NOBODY, NOBODY)  # the user's own folders
        writable.chmod(0o700)
        locked.chmod(0o500)  # its own folder, made read-only
        # The same user writes a set where it may: the refusal below is the folder's mode.
        assert as_unprivileged(refusal, writable / "sim") == "written"
        assert npy_files(writable / "sim") == npy_files(tmp_path / "warm")
        assert "not writable" in as_unprivileged(refusal, locked / "sim")
        assert list(locked.iterdir()) == []
    finally:
        for folder in top.iterdir():
            folder.chmod(0o700)
        shutil.rmtree(top)


def test_refuses_the_real_data_folder(tmp_path, monkeypatch):
    real = tmp_path / "data" / "dataset"
    monkeypatch.setattr(constants, "REAL_DATA_DIR", real)
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
    params = {name: draw_parameters(name, np.random.default_rng(5), LEGACY) for name in CLASSES}
    assert len(params["no"]["lens"]) == 2 and params["no"]["masses"].size == 0
    assert params["sphere"]["lens_models"].count("POINT_MASS") == LEGACY.n_subhalos
    assert params["vort"]["lens_models"].count("POINT_MASS") == LEGACY.vortex_points
    # Each clump's mass is taken from the smooth halo by a negative Gaussian of the same mass.
    assert params["sphere"]["lens_models"].count("GAUSSIAN") == LEGACY.n_subhalos
    sphere = params["sphere"]["lens"]
    for clump, hole in zip(sphere[2:27], sphere[27:], strict=True):
        assert_allclose(hole["amp"], -math.pi * clump["theta_E"] ** 2)
        assert (hole["center_x"], hole["center_y"]) == (clump["center_x"], clump["center_y"])
    # The smooth part is drawn first, with the same random numbers in every class.
    assert params["no"]["source"] == params["sphere"]["source"] == params["vort"]["source"]
    lo, hi = LEGACY.subhalo_mass
    masses = params["sphere"]["masses"]
    assert ((masses >= lo) & (masses <= hi)).all()
    vortex = params["vort"]["masses"]
    assert np.ptp(vortex) == 0 and lo * LEGACY.n_subhalos <= vortex.sum() <= hi * LEGACY.n_subhalos
    # The vortex's point masses lie on one straight line.
    line = params["vort"]["lens"][2 : 2 + LEGACY.vortex_points]
    points = np.array([[k["center_x"], k["center_y"]] for k in line])
    steps = np.diff(points, axis=0)
    cross = steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0]
    assert_allclose(cross, 0.0, atol=1e-12)
    length = np.hypot(*(points[-1] - points[0]))
    assert LEGACY.vortex_length[0] <= length <= LEGACY.vortex_length[1]


def test_without_compensation_the_mass_inside_the_ring_comes_from_the_main_lens():
    preset = dataclasses.replace(LEGACY, compensation_sigma=0.0)
    rng_draw = draw_parameters("sphere", np.random.default_rng(11), preset)
    smooth = draw_parameters("no", np.random.default_rng(11), preset)
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
    lo, hi = LEGACY.subhalo_mass
    masses = sample_masses(np.random.default_rng(0), 200_000, (lo, hi), LEGACY.mass_function_slope)
    p = 1 - LEGACY.mass_function_slope
    for m in (3 * lo, 0.1 * hi):
        expected_cdf = (m**p - lo**p) / (hi**p - lo**p)
        assert_allclose((masses < m).mean(), expected_cdf, atol=0.005)


def test_point_mass_einstein_radius_units():
    from astropy import constants, units
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=LEGACY.hubble_constant, Om0=LEGACY.omega_matter)
    d_l = cosmo.angular_diameter_distance(LEGACY.z_lens)
    d_s = cosmo.angular_diameter_distance(LEGACY.z_source)
    d_ls = cosmo.angular_diameter_distance(LEGACY.z_lens, LEGACY.z_source)
    # theta_E^2 = 4 G M D_ls / (c^2 D_l D_s) for a point mass M.
    mass = 1e10 * units.M_sun
    theta = np.sqrt(4 * constants.G * mass * d_ls / (constants.c**2 * d_l * d_s)).decompose()
    expected = (theta.value * units.rad).to(units.arcsec).value
    # lenstronomy carries its own G and M_sun, a few 1e-5 off astropy's.
    assert_allclose(point_mass_theta_e(1e10, LEGACY), expected, rtol=1e-3)
    assert_allclose(math.pi * point_mass_theta_e(2e9, TEST_I) ** 2 * sigma_crit_angle(TEST_I), 2e9)


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
    assert valid == {"empty": False, **{name: name == "good" for name in cases}}


def test_legacy_preset_keeps_its_pinned_bytes(tmp_path, check_pinned_bytes):
    check_pinned_bytes("legacy", LEGACY_SHA256)  # drawn alone and as the writer stores them
    assert json.loads((tmp_path / MANIFEST).read_text())["preset"] == "legacy"


def test_presets_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'test-ii'"):
        get_preset("test-ii")
    with pytest.raises(ValueError, match="unknown preset 'test-ii'"):
        make(tmp_path / "sim", preset="test-ii")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no parameter"):
        get_preset("legacy", substructure_mass=1e9)
    assert get_preset("test-i", substructure_mass=3e9).substructure_mass == 3e9


def test_cli_preset_is_recorded_and_a_change_refused(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["--out", str(out), "--train", "1", "--val", "1", "--quiet", "--workers", "1"]
    assert cli([*argv, "--preset", "legacy"]) == 0
    assert json.loads((out / MANIFEST).read_text())["preset"] == "legacy"
    before = snapshot(out)
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)  # the default preset, test-i
    assert exit_info.value.code == 2
    assert "preset 'legacy', not 'test-i'" in capsys.readouterr().err
    assert snapshot(out) == before
    with pytest.raises(SystemExit):
        cli([*argv, "--preset", "legacy", "--substructure-mass", "1e9"])
    assert "expected a mass >= 0 with --preset test-i" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["--out", str(out), "--quiet"])
    assert "--train, --val" in capsys.readouterr().err
    assert snapshot(out) == before
