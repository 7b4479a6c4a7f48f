"""Tests for lensing/evaluate.py: metrics against sklearn, prediction, a checkpoint's report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from lensing.cli import main
from lensing.core.atomic import atomic_torch_save
from lensing.core.constants import CLASSES
from lensing.core.metrics import bootstrap_macro_auc, compute_metrics
from lensing.data.dataset import LensingDataset
from lensing.evaluation.calibration import (
    TEMPERATURE_BOUNDS,
    fit_temperature,
    logits_from_probs,
    read_calibration,
)
from lensing.evaluation.evaluate import evaluate_checkpoint
from lensing.model.checkpoint import load_checkpoint
from lensing.model.inference import predict_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(argv: list[str]) -> int:
    return main(["evaluate", *argv])


def noisy_scores(n_per_class: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (3 n,) and softmax probabilities whose true-class logit is raised by separation."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(3), n_per_class))
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), labels] += separation
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True)


# --- compute_metrics ---------------------------------------------------------------------------


def test_perfectly_separable_gives_auc_one() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[labels] * 0.8 + 0.1
    metrics = compute_metrics(labels, probs, n_bootstrap=20)
    assert metrics["auc_macro"] == 1.0
    assert metrics["auc_per_class"] == {"no": 1.0, "sphere": 1.0, "vort": 1.0}
    assert metrics["auc_macro_ci95"] == [1.0, 1.0]
    assert metrics["accuracy"] == 1.0
    assert metrics["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_hand_computed_case_with_ties() -> None:
    # Pairs (positive, negative) won, ties counting one half, worked out by hand:
    # no: 0.9 beats 4, 0.3 beats 2 and ties 1 -> 6.5 / 8; sphere: 8 / 8; vort: 2 * 3.5 / 8.
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.30, 0.10, 0.60],
            [0.50, 0.30, 0.20],
            [0.10, 0.80, 0.10],
            [0.30, 0.10, 0.60],
            [0.20, 0.20, 0.60],
        ]
    )
    metrics = compute_metrics(labels, probs, n_bootstrap=0)
    assert_allclose(list(metrics["auc_per_class"].values()), [0.8125, 1.0, 0.875], rtol=0, atol=0)
    assert_allclose(metrics["auc_macro"], (0.8125 + 1.0 + 0.875) / 3, rtol=1e-15)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 2]]
    assert metrics["auc_macro_ci95"] is None


def test_matches_sklearn_on_random_data() -> None:
    labels, probs = noisy_scores(200, separation=0.7, seed=3)
    probs = np.round(probs, 2)  # coarse scores make many ties
    probs /= probs.sum(axis=1, keepdims=True)
    metrics = compute_metrics(labels, probs, n_bootstrap=0)
    expected_macro = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    expected_per_class = roc_auc_score(labels, probs, multi_class="ovr", average=None)
    assert metrics["auc_macro"] == expected_macro
    assert_allclose(list(metrics["auc_per_class"].values()), expected_per_class, rtol=1e-15)
    assert metrics["accuracy"] == accuracy_score(labels, probs.argmax(axis=1))
    assert_array_equal(metrics["confusion_matrix"], confusion_matrix(labels, probs.argmax(1)))
    report = metrics["classification_report"]
    assert set(CLASSES) <= set(report)
    assert report["accuracy"] == pytest.approx(metrics["accuracy"])
    assert 0.5 < metrics["auc_macro"] < 1.0


def test_accepts_torch_tensors() -> None:
    labels, probs = noisy_scores(20, separation=1.0, seed=0)
    from_numpy = compute_metrics(labels, probs, n_bootstrap=50)
    from_torch = compute_metrics(torch.from_numpy(labels), torch.from_numpy(probs), n_bootstrap=50)
    assert from_torch == from_numpy


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_data() -> None:
    widths = []
    for n_per_class in (50, 2000):
        labels, probs = noisy_scores(n_per_class, separation=1.0, seed=1)
        metrics = compute_metrics(labels, probs, n_bootstrap=300, seed=0)
        low, high = metrics["auc_macro_ci95"]
        assert low < metrics["auc_macro"] < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # width shrinks like 1/sqrt(n): 40x the data, ~6x narrower


def test_bootstrap_is_repeatable_and_seeded() -> None:
    labels, probs = noisy_scores(40, separation=1.0, seed=2)
    first = compute_metrics(labels, probs, n_bootstrap=100, seed=7)["auc_macro_ci95"]
    again = compute_metrics(labels, probs, n_bootstrap=100, seed=7)["auc_macro_ci95"]
    other = compute_metrics(labels, probs, n_bootstrap=100, seed=8)["auc_macro_ci95"]
    assert first == again
    assert first != other


def test_bootstrap_agrees_with_a_plain_resampling_loop() -> None:
    # The vectorized weighted statistic against resampling and scoring with sklearn.
    labels, probs = noisy_scores(60, separation=0.8, seed=4)
    probs = np.round(probs, 2)
    probs /= probs.sum(axis=1, keepdims=True)
    fast = bootstrap_macro_auc(labels, probs, n_bootstrap=400, seed=0)
    rng = np.random.default_rng(1)
    members = [np.flatnonzero(labels == k) for k in range(3)]
    slow = []
    for _ in range(400):
        idx = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
        slow.append(roc_auc_score(labels[idx], probs[idx], multi_class="ovr", average="macro"))
    assert fast.shape == (400,)
    assert abs(fast.mean() - np.mean(slow)) < 0.005
    assert fast.std() == pytest.approx(np.std(slow), rel=0.2)


def test_unpredicted_classes_keep_their_rows_and_columns() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    probs = np.tile([0.6, 0.3, 0.1], (6, 1))  # always predicts "no"
    probs[:, 1] += np.linspace(0, 0.01, 6)  # some ranking so AUCs exist
    metrics = compute_metrics(labels, probs, n_bootstrap=0)
    assert metrics["confusion_matrix"] == [[1, 0, 0], [2, 0, 0], [3, 0, 0]]
    assert metrics["classification_report"]["vort"]["recall"] == 0.0
    assert metrics["accuracy"] == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([0, 1, 2], np.full((4, 3), 1 / 3), "3 labels but 4 rows"),
        ([0, 1, 2], np.full((3, 2), 0.5), r"shape \(N, 3\)"),
        ([0, 1, 2], np.full(3, 1 / 3), r"shape \(N, 3\)"),
        ([0, 0, 2], np.full((3, 3), 1 / 3), "class 'sphere'"),
        ([0, 1, 3], np.full((3, 3), 1 / 3), "out of range"),
        ([0.0, 1.5, 2.0], np.full((3, 3), 1 / 3), "integer class indices"),
        ([[0, 1, 2]], np.full((3, 3), 1 / 3), r"shape \(N,\)"),
        ([0, 1, 2], np.array([[np.nan, 0, 1]] * 3), "NaN"),
        ([], np.zeros((0, 3)), "empty"),
    ],
)
def test_bad_input_is_a_clear_error(labels, probs, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(np.asarray(labels), probs, n_bootstrap=0)


def test_negative_bootstrap_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="n_bootstrap"):
        compute_metrics([0, 1, 2], np.eye(3), n_bootstrap=-1)


# --- predict -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    from lensing.model.network import build_model

    torch.manual_seed(0)
    return build_model("none")


def test_predict_gives_probabilities_with_and_without_tta(tiny_model) -> None:
    images = torch.rand(5, 1, 48, 48)
    labels = torch.tensor([0, 1, 2, 0, 1])
    tiny_model.train()
    running_mean = tiny_model.bn1.running_mean.clone()
    for tta in (False, True):
        probs, got_labels = predict_split(
            tiny_model, (images, labels), device="cpu", batch_size=2, tta=tta
        )
        assert probs.shape == (5, 3)
        assert probs.dtype == np.float64
        assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        assert_array_equal(got_labels, labels.numpy())
    assert tiny_model.training  # left in the mode it came in
    assert torch.equal(tiny_model.bn1.running_mean, running_mean)  # but ran in eval mode


def test_tta_is_the_mean_over_the_eight_views(tiny_model) -> None:
    from lensing.data.augment import d4_views

    images = torch.rand(3, 1, 48, 48)
    labels = torch.tensor([0, 1, 2])
    with_tta, _ = predict_split(tiny_model, (images, labels), device="cpu", tta=True)
    per_view = [
        predict_split(tiny_model, (view, labels), device="cpu", tta=False)[0]
        for view in d4_views(images)
    ]
    assert_allclose(with_tta, np.mean(per_view, axis=0), atol=1e-6)
    assert not np.allclose(per_view[0], per_view[1], atol=1e-6)  # the views do differ


def test_tta_changes_nothing_on_a_symmetric_image(tiny_model) -> None:
    size = 48
    offset = np.arange(size) - (size - 1) / 2  # centre between pixels: D4 maps the grid to itself
    radius2 = offset[:, None] ** 2 + offset[None, :] ** 2
    ring = torch.from_numpy(np.exp(-((np.sqrt(radius2) - 12) ** 2) / 8)).float()
    images = torch.stack([ring, 1 - ring]).unsqueeze(1)
    labels = torch.tensor([0, 1])
    plain, _ = predict_split(tiny_model, (images, labels), device="cpu", tta=False)
    averaged, _ = predict_split(tiny_model, (images, labels), device="cpu", tta=True)
    assert_allclose(averaged, plain, atol=1e-5)


def test_predict_reads_datasets_in_memory_or_from_files(small_set, tiny_model) -> None:
    from lensing.data.dataset import LensingDataset

    in_memory = LensingDataset(small_set, "val", progress=False, cache=False)
    from_files = LensingDataset(small_set, "val", in_memory=False, progress=False, cache=False)
    probs_a, labels_a = predict_split(tiny_model, in_memory, device="cpu", batch_size=4)
    probs_b, labels_b = predict_split(tiny_model, from_files, device="cpu", batch_size=5)
    assert probs_a.shape == (6, 3)
    assert_array_equal(labels_a, in_memory.labels.numpy())
    assert_array_equal(labels_a, labels_b)
    assert_allclose(probs_a, probs_b, atol=1e-6)


def test_predict_rejects_a_bad_batch_size(tiny_model) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        predict_split(
            tiny_model, (torch.rand(2, 1, 8, 8), torch.tensor([0, 1])), device="cpu", batch_size=0
        )


# --- evaluate_checkpoint and the command line --------------------------------------------------


def write_checkpoint(path: Path, model: torch.nn.Module) -> Path:
    """A best_model.pth as lensing.training.fit writes it (keys from the contract)."""
    history = [
        {"epoch": 1, "train_loss": 1.1, "val_loss": 1.05, "val_auc": 0.55},
        {"epoch": 2, "train_loss": 0.9, "val_loss": 1.0, "val_auc": 0.61},
    ]
    return atomic_torch_save(
        {
            "model": model.state_dict(),
            "config": {"pretrained": "none", "epochs": 2},
            "params": {"early": 1e-4, "middle": 1e-4, "late": 1e-3, "fc": 1e-3},
            "classes": list(CLASSES),
            "val_auc": 0.61,
            "epoch": 2,
            "history": history,
            "pretrained": False,
        },
        path,
    )


def test_evaluate_checkpoint_writes_metrics_and_figures(small_set, tiny_model, tmp_path) -> None:
    checkpoint = write_checkpoint(tmp_path / "models" / "best_model.pth", tiny_model)
    out = tmp_path / "reports"
    metrics = evaluate_checkpoint(
        small_set, checkpoint, out_dir=out, device="cpu", precision="fp32", n_bootstrap=50
    )
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "auc_macro",
        "auc_per_class",
        "auc_macro_ci95",
        "accuracy",
        "confusion_matrix",
        "data",
        "pretrained",
        "split",
        "n_images",
        "checkpoint",
        "tta",
    ):
        assert key in saved, key
    assert saved["data"] == "external"  # the fixture set has no simulator manifest
    assert saved["pretrained"] is False
    assert saved["split"] == "test"
    assert saved["n_images"] == 6
    assert set(saved["auc_per_class"]) == set(CLASSES)
    assert np.asarray(saved["confusion_matrix"]).sum() == 6
    assert saved["auc_macro"] == pytest.approx(metrics["auc_macro"])
    for name in ("roc.png", "confusion_matrix.png", "training_history.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name
    for name in ("reliability.png", "mistakes.png", "saliency.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC), name
    assert set(saved["calibration"]) == {"ece", "ece_calibrated", "temperature"}
    record = read_calibration(out / "calibration.json")
    assert record["temperature"] == saved["calibration"]["temperature"]


def evaluate_quietly(root: Path, checkpoint: Path, out: Path, **options) -> dict:
    """evaluate_checkpoint on the CPU in fp32, without the bootstrap and the saliency maps."""
    defaults = {"device": "cpu", "precision": "fp32", "n_bootstrap": 0, "explain": False}
    return evaluate_checkpoint(root, checkpoint, out_dir=out, **(defaults | options))


def test_the_temperature_is_fitted_on_val_only_and_written_beside_the_metrics(
    trained, tmp_path
) -> None:
    # A copy of the data whose test labels are all wrong (each class folder renamed to the
    # next class): fitted there, the temperature would be far larger than on val.
    root = Path(shutil.copytree(trained.root, tmp_path / "set"))
    for old, new in zip(CLASSES, CLASSES[1:] + CLASSES[:1], strict=True):
        (root / "test" / old).rename(root / "test" / f"{new}.tmp")
    for name in CLASSES:
        (root / "test" / f"{name}.tmp").rename(root / "test" / name)
    test = LensingDataset(root, "test", progress=False, cache=False)
    test_probs, test_labels = predict_split(
        trained.model, test, device="cpu", precision="fp32", stretch=trained.stretch
    )
    on_val = fit_temperature(logits_from_probs(trained.probs["val"]), trained.labels["val"])
    on_test = fit_temperature(logits_from_probs(test_probs), test_labels)
    low, high = TEMPERATURE_BOUNDS
    assert 2 * low < on_val < high / 2  # a real optimum, not a bound
    assert on_test > 4 * on_val  # the splits give clearly different temperatures

    checkpoint = trained.copy_checkpoint(tmp_path / "model")
    before = checkpoint.read_bytes()
    metrics = evaluate_quietly(root, checkpoint, tmp_path / "r")
    assert metrics["split"] == "test" and metrics["accuracy"] < 1 / 3  # the wrong labels
    assert metrics["calibration"]["temperature"] == pytest.approx(on_val, rel=1e-6)
    record = read_calibration(tmp_path / "r" / "calibration.json")
    assert record["temperature"] == metrics["calibration"]["temperature"]
    assert (record["split"], record["n_images"]) == ("val", len(trained.labels["val"]))
    assert record["tta"] is False and record["source"] == "fitted"
    assert checkpoint.read_bytes() == before  # the model file is left as it was
    assert "temperature" not in load_checkpoint(checkpoint)
    assert not (tmp_path / "r" / "figures" / "saliency.png").exists()  # --no-explain


def spy_on_refits(monkeypatch) -> tuple[list[tuple[int, float]], list[str]]:
    """Record evaluate's temperature fits ((rows fitted, temperature)) and the splits it loads."""
    import lensing.evaluation.evaluate as evaluate_module

    fits, loaded = [], []
    real_fit, real_dataset = evaluate_module.fit_temperature, evaluate_module.LensingDataset

    def fit(logits, labels, *args, **kwargs):
        fits.append((len(labels), real_fit(logits, labels, *args, **kwargs)))
        return fits[-1][1]

    def dataset(root, split, *args, **kwargs):
        loaded.append(split)
        return real_dataset(root, split, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "fit_temperature", fit)
    monkeypatch.setattr(evaluate_module, "LensingDataset", dataset)
    return fits, loaded


@pytest.mark.slow
def test_a_temperature_stored_by_an_older_evaluate_is_reused_with_the_same_tta_only(
    trained, tmp_path, monkeypatch
) -> None:
    # A temperature no fit here would give, stored inside the checkpoint as older versions of
    # evaluate did, fitted with TTA.
    checkpoint = trained.copy_checkpoint(tmp_path, temperature=1.2345, temperature_tta=True)
    before = checkpoint.read_bytes()
    fits, loaded = spy_on_refits(monkeypatch)
    sizes = {"per_class": {"test": 1, "val": 2}}  # 3 test and 6 val images: TTA is 8x the work
    reused = evaluate_quietly(trained.root, checkpoint, tmp_path / "r1", tta=True, **sizes)
    assert reused["calibration"]["temperature"] == 1.2345
    assert fits == [] and loaded == ["test"]  # no refit, val not even loaded
    record = read_calibration(tmp_path / "r1" / "calibration.json")
    assert record["temperature"] == 1.2345 and record["source"] == "checkpoint"
    assert record["n_images"] is None and record["tta"] is True

    refitted = evaluate_quietly(trained.root, checkpoint, tmp_path / "r2", tta=False, **sizes)
    assert loaded == ["test", "test", "val"]
    assert len(fits) == 1 and fits[0][0] == 6  # once, on the 6 val images
    temperature = fits[0][1]
    assert temperature != pytest.approx(1.2345)
    assert refitted["calibration"]["temperature"] == temperature
    record = read_calibration(tmp_path / "r2" / "calibration.json")
    assert record["temperature"] == temperature and record["source"] == "fitted"
    assert (record["n_images"], record["tta"]) == (6, False)
    # Nothing is stored back: the checkpoint keeps its old temperature, byte for byte.
    assert checkpoint.read_bytes() == before


def test_cli_prints_a_markdown_table(small_set, tiny_model, tmp_path, capsys) -> None:
    checkpoint = write_checkpoint(tmp_path / "best_model.pth", tiny_model)
    out = tmp_path / "reports"
    argv = ["--data", str(small_set), "--checkpoint", str(checkpoint), "--out", str(out)]
    argv += ["--split", "val", "--device", "cpu", "--precision", "fp32", "--n-bootstrap", "20"]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "| AUC macro |" in printed and "95% CI" in printed
    assert "| AUC sphere |" in printed and "| accuracy |" in printed
    assert "| true \\ predicted | no | sphere | vort |" in printed
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
    assert printed.splitlines()[-3].startswith("This model")  # the verdict, before "wrote"


def test_cli_names_a_broken_checkpoint(small_set, tmp_path, capsys) -> None:
    broken = tmp_path / "best_model.pth"
    broken.write_bytes(b"not a checkpoint")
    argv = ["--data", str(small_set), "--checkpoint", str(broken), "--out", str(tmp_path / "r")]
    assert cli(argv + ["--device", "cpu"]) == 1
    assert str(broken) in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()
