"""The benchmarks' functions on tiny data: they run, measure something and report it."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# benchmarks/ is a top-level folder beside the installed package, importable from the
# repository root (``python -m benchmarks``) but not from pytest's tests/ path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import machine, markdown_table, spread
from benchmarks.compare_recipes import compare_recipes, comparison_table
from benchmarks.data_speed import data_speed_table, run_load_time, simulate_rate
from benchmarks.profile_step import main as profile_main
from benchmarks.profile_step import profile_step
from benchmarks.quality import quality_table, run_quality
from benchmarks.search_cost import run_search_cost, search_cost_table
from benchmarks.seed_pipeline import (
    INPUT_SIZE,
    NpyFolderDataset,
    seed_fit,
    seed_loader,
    seed_predict,
    seed_transforms,
)
from benchmarks.speed import model_rate, ours_rate, run_speed, seed_rate, speed_table
from benchmarks.suite import BENCHMARKS, MEASURES, _targets, cli
from lensing.core.constants import CLASSES
from lensing.core.rng import seed_everything
from lensing.data.dataset import LensingDataset, load_splits


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, write_set) -> Path:
    """6 train, 3 val and 3 test images per class with a learnable pattern."""
    return write_set(tmp_path_factory.mktemp("bench"), {"train": 6, "val": 3, "test": 3})


@pytest.fixture(scope="module")
def tiny_splits(tiny_root: Path) -> dict:
    return load_splits(tiny_root, progress=False)


def test_seed_dataset_gives_imagenet_sized_rgb_copies(tiny_root: Path) -> None:
    path = tiny_root / "train" / "no" / "1.npy"
    dataset = NpyFolderDataset([path], [0], seed_transforms(train=False))
    image, label = dataset[0]
    assert image.shape == (3, INPUT_SIZE, INPUT_SIZE) and image.dtype == torch.float32
    assert label == 0
    # The three channels are copies of one grey image, normalized with different mean/std.
    raw = (image * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)) + torch.tensor(
        [0.485, 0.456, 0.406]
    ).view(3, 1, 1)
    torch.testing.assert_close(raw[0], raw[1], atol=1e-5, rtol=0)
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0 + 1e-5
    with pytest.raises(ValueError, match="labels"):
        NpyFolderDataset([path], [0, 1], seed_transforms(train=True))


def test_seed_train_transforms_are_random(tiny_root: Path) -> None:
    path = tiny_root / "train" / "sphere" / "1.npy"
    dataset = NpyFolderDataset([path], [1], seed_transforms(train=True))
    seed_everything(0)
    first, second = dataset[0][0], dataset[0][0]
    assert not torch.equal(first, second)


@pytest.mark.slow
def test_seed_fit_and_predict(tiny_splits: dict) -> None:
    train, val, test = (tiny_splits[s] for s in ("train", "val", "test"))
    trained = seed_fit(
        (train.files, train.labels.tolist()),
        (val.files, val.labels.tolist()),
        epochs=1,
        batch_size=6,
        num_workers=0,
    )
    assert len(trained["history"]) == 1 and trained["best_epoch"] == 1
    assert 0.0 <= trained["best_val_auc"] <= 1.0
    loader = seed_loader(test.files, test.labels.tolist(), train=False, num_workers=0)
    probs, labels = seed_predict(trained["model"], loader)
    assert probs.shape == (len(test), len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, test.labels.numpy())


@pytest.mark.slow
def test_throughput_functions_measure_images_per_second(tiny_splits: dict) -> None:
    train = tiny_splits["train"]
    common = dict(batch_size=4, steps=1, warmup=1)
    ours = ours_rate(train, precision="fp32", augment="d4", **common)
    assert ours["images_per_s"] > 0 and ours["warmup_seconds"] > 0
    assert model_rate(precision="fp32", **common) > 0
    files, labels = list(train.files), train.labels.tolist()
    assert seed_rate(files, labels, num_workers=0, **common) > 0


@pytest.mark.slow
def test_run_speed_reports_ratios(tiny_splits: dict) -> None:
    result = run_speed(
        tiny_splits["train"], batch_size=4, steps=1, warmup=1, repeats=1, num_workers=0,
        precisions=("fp32",),
    )  # fmt: skip
    rates = result["images_per_s"]
    assert set(rates) == {"seed", "ours_fp32", "model_fp32"}
    fp32 = result["by_precision"]["fp32"]
    assert fp32["train_speedup_vs_seed"] == pytest.approx(
        rates["ours_fp32"]["median"] / rates["seed"]["median"]
    )
    assert "seed pipeline" in speed_table(result)


@pytest.mark.slow
def test_run_quality_scores_both_recipes(tiny_splits: dict, tmp_path: Path) -> None:
    result = run_quality(
        tiny_splits, epochs=1, batch_size=6, compare_precision=False, work_dir=tmp_path
    )
    for recipe in ("seed", "improved"):
        entry = result[recipe]
        assert set(entry["auc_per_class"]) == set(CLASSES)
        low, high = entry["auc_macro_ci95"]
        assert low <= high
    assert result["improved"]["augment"] == "d4"
    assert "without_tta" in result["improved"]
    assert result["error_ratio"] == pytest.approx(
        (1 - result["improved"]["auc_macro"]) / (1 - result["seed"]["auc_macro"])
    )
    assert "seed pipeline" in quality_table(result)
    assert not any(tmp_path.iterdir())  # training folders are cleaned up


@pytest.mark.slow
def test_search_cost_counts_epochs(tmp_path: Path) -> None:
    """A pruned combination's untrained epochs are counted as saved. The data is plain (noise,
    a bright ring, a bright bar: one epoch separates them), and the second combination's head
    learning rate saturates its outputs (val AUC 0.5), so halving stops it after epoch 1."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:150, :150] - 75
    shapes = {"sphere": np.abs(np.hypot(yy, xx) - 40) < 8, "vort": (abs(yy) < 8) & (abs(xx) < 60)}
    for split, n in {"train": 4, "val": 3, "test": 1}.items():
        for name in CLASSES:
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                noise = rng.random((150, 150))
                image = noise if name == "no" else 0.2 * noise + shapes[name]
                image = (image - image.min()) / (image.max() - image.min())
                np.save(tmp_path / "data" / split / name / f"{i}.npy", image[None])
    splits = load_splits(tmp_path / "data", progress=False)
    grid = {"early": [1e-3], "middle": [1e-3], "late": [1e-3], "fc": [1e-3, 10.0]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 7 short epochs: one thread wastes less on a shared machine
    try:
        result = run_search_cost(
            {"train": splits["train"], "val": splits["val"]},
            epochs=2,
            modes=("none", "halving"),
            grid=grid,
            base_config={"batch_size": 4, "augment": "none", "schedule": "plateau"}
            | {"precision": "fp32"},
            work_dir=tmp_path / "work",
        )
    finally:
        torch.set_num_threads(threads)
    assert result["combinations"] == 2
    full, halving = result["modes"]["none"], result["modes"]["halving"]
    assert full["epochs_trained"] == 4 and full["combinations_pruned"] == 0
    assert halving["combinations_pruned"] == 1  # the saturated head, after its first epoch
    assert halving["epochs_trained"] == 3
    assert result["epochs_saved_share"]["halving"] == pytest.approx(0.25)
    assert result["same_best_as_full_grid"]["halving"]  # pruning lost nothing here
    assert "| halving | " in search_cost_table(result)
    assert not any((tmp_path / "work").iterdir())


def test_load_time_writes_real_format_and_cleans_up(tiny_splits: dict, tmp_path: Path) -> None:
    sources = tiny_splits["train"].images.numpy()
    result = run_load_time(30, sources, work_dir=tmp_path)
    assert result["n_images"] == 30
    assert result["cold"] > 0 and result["cached"] > 0
    assert not any(tmp_path.iterdir())  # the scratch split is deleted
    assert "load 30 images" in data_speed_table(None, result)


def test_fake_split_files_are_valid(tiny_splits: dict, tmp_path: Path) -> None:
    from benchmarks.data_speed import write_fake_split

    files = write_fake_split(tmp_path, 6, tiny_splits["train"].images.numpy())
    assert len(files) == 6
    array = np.load(files[0], allow_pickle=False)
    assert array.shape == (1, 150, 150) and array.dtype == np.float64
    assert array.min() == 0.0 and array.max() == 1.0
    assert not np.array_equal(array, np.load(files[1], allow_pickle=False))
    assert len(LensingDataset(tmp_path, "train", progress=False, cache=False)) == 6


@pytest.mark.slow
def test_simulate_rate(tmp_path: Path) -> None:
    result = simulate_rate(1, workers=1, work_dir=tmp_path)
    assert result["images"] == 6 and result["images_per_s"] > 0
    assert not any(tmp_path.iterdir())


def test_report_helpers() -> None:
    info = machine()
    assert info["cores"] >= 1 and info["threads"] >= 1 and info["torch"] == torch.__version__
    assert info["auto_precision"] in {"fp32", "bf16"}
    assert spread([3.0, 1.0, 2.0])["median"] == 2.0
    row = markdown_table(list("abcd"), [[1.23456, 24.94, 137.4, "x"]]).splitlines()[2]
    assert row == "| 1.235 | 24.9 | 137 | x |"
    targets = _targets({"train_speedup_vs_seed": 6.0, "pipeline_efficiency": 0.5})
    assert targets["train_speedup_vs_seed"]["met"] is True
    assert targets["pipeline_efficiency"]["met"] is False
    assert "quality_error_ratio" not in targets


def test_every_benchmark_name_has_its_function() -> None:
    assert list(MEASURES) == list(BENCHMARKS)


def test_no_benchmark_module_imports_the_entry_point() -> None:
    # benchmarks/__main__.py only starts the suite; a module that imported it would close an
    # import circle (common -> __main__ -> common did).
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    importers = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if "benchmarks.__main__" in names:
                importers.append(path.name)
    assert importers == []
    assert "benchmarks.suite" in (folder / "__main__.py").read_text()


def test_cli_rejects_unknown_benchmark(tmp_path: Path, capsys) -> None:
    assert cli(["--only", "nonsense", "--out", str(tmp_path / "b.json")]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_profile_step_splits_the_step_time_by_operator_kind(capsys) -> None:
    result = profile_step(batch_size=2, steps=1, warmup=1, precision="fp32")
    shares = result["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    # A ResNet18 step is mostly convolutions, forward and backward.
    assert shares["convolution backward"] > 0.1 and shares["convolution forward"] > 0.05
    assert profile_main(["--precision", "fp32", "--batch-size", "2", "--steps", "1"]) == 0
    assert "| convolution backward |" in capsys.readouterr().out
    assert profile_main(["--steps", "0"]) == 2


@pytest.mark.slow
def test_compare_recipes_scores_each_recipe_per_seed_and_tabulates_them(
    tiny_splits: dict, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "recipes.json"
    names = ["seed-notebook", "d4 + onecycle + arcsinh"]
    result = compare_recipes(
        tiny_splits, epochs=1, seeds=[0, 1], names=names, batch_size=6, out=out
    )
    assert list(result["runs"]) == names
    for runs in result["runs"].values():
        assert [scored["seed"] for scored in runs] == [0, 1]
        for scored in runs:
            for kind in ("plain", "tta"):
                assert 0.0 <= scored[kind]["auc_macro"] <= 1.0
                assert set(scored[kind]["auc_per_class"]) == set(CLASSES)
    assert json.loads(out.read_text())["runs"] == json.loads(json.dumps(result["runs"]))
    assert "epoch" not in capsys.readouterr().out  # fit's lines go to stderr, not the tables
    table = comparison_table(result)
    assert "seed-notebook" in table and "+-" in table


@pytest.mark.slow
def test_difficulty_trains_every_preset_beside_its_baseline(tmp_path, capsys):
    import json

    from benchmarks.difficulty import main as difficulty
    from lensing.model.lensing_weights import weights_label

    out = tmp_path / "difficulty.json"
    argv = ["--tiny", "--presets", "test-i", "model-a:subhalo_mass=1e9/1e10"]
    argv += ["--recipes", "default", "from-scratch, batch 32", "--epochs", "2"]
    argv += ["--pretrained", "none", "lensing"]
    assert difficulty([*argv, "--work", str(tmp_path / "sets"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert [(r["preset"], r["pretrained"], r["recipe"]) for r in results] == [
        (preset, weights, recipe)
        for preset in ("test-i", "model-a")
        for weights in ("none", "lensing")
        for recipe in ("default", "from-scratch, batch 32")
    ]
    assert results[4]["overrides"] == {"subhalo_mass": [1e9, 1e10]}
    for result in results:
        # The transfer benchmark: each run names its weights; pretrained ones are also
        # scored before any fine-tuning.
        lensing = result["pretrained"] == "lensing"
        assert result["runs"][0]["weights"] == (weights_label() if lensing else "none")
        assert (result["zero_shot_auc"] is not None) == lensing
        assert result["per_class"] == {"train": 6, "val": 3, "test": 3}
        assert [run["seed"] for run in result["runs"]] == [0]
        assert 0 <= result["summary"]["auc_macro_mean"] <= 1
        assert result["summary"]["hardest"] in ("no", "sphere", "vort")
        assert 0 <= result["baseline_pixel_stats"]["auc_macro"] <= 1
        # A point per epoch: 18 training images, at batch 8 (3 steps) or 32 (1 step).
        steps = 3 if result["batch_size"] == 8 else 1
        curve = result["runs"][0]["curve"]
        assert [(p["epoch"], p["images_seen"], p["steps"]) for p in curve] == [
            (1, 18, steps),
            (2, 36, 2 * steps),
        ]
        assert all(0 <= p["auc_macro"] <= 1 for p in curve)
    # Both variants trained on the one simulated set of each preset.
    assert len(list((tmp_path / "sets").glob("*_6-3-3"))) == 2
    printed = capsys.readouterr().out
    assert "model-a subhalo_mass=1e+09/1e+10" in printed and "images seen" in printed


def test_backbone_speed_times_both_networks_side_by_side(tmp_path, capsys):
    from benchmarks.backbone_speed import main as backbone_speed

    out = tmp_path / "backbone.json"
    argv = ["--batch", "4", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    argv += ["--precision", "fp32", "--widths", "2", "3", "4", "5", "--out", str(out)]
    assert backbone_speed(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"resnet18", "d4-resnet"}
    assert report["models"]["d4-resnet"]["widths"] == [2, 3, 4, 5]
    assert "time ratio d4 / resnet" in capsys.readouterr().out
