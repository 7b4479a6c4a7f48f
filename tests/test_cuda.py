"""The CUDA paths: training, resuming, compiling, inference and evaluation on a GPU.

Every test here is marked ``cuda`` and skips without a CUDA device; ``benchmarks/gpu_run.sh``
runs them (``pytest -m cuda``) on the GPU machine. Each asserts what differs on a GPU: the split
moved to the device once, bf16 autocast, ``torch.compile``, checkpoints that load on a CPU, and
probabilities that agree with the CPU's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensing.core.runtime import resolve_precision
from lensing.data.batches import TrainBatches
from lensing.data.dataset import LensingDataset
from lensing.evaluation.evaluate import evaluate_checkpoint
from lensing.model.checkpoint import BEST_MODEL, CHECKPOINT, load_checkpoint
from lensing.model.inference import load_trained_model, predict_split
from lensing.training.config import TrainConfig
from lensing.training.fit import fit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def config_for(data, out, **overrides) -> TrainConfig:
    fields = dict(data_dir=str(data), out_dir=str(out), epochs=2, batch_size=8)
    fields |= dict(pretrained="none", device="cuda", seed=0)
    return TrainConfig(**(fields | overrides))


def test_auto_precision_on_cuda_is_a_mixed_precision():
    assert resolve_precision("auto", CUDA) in {"bf16", "fp16"}


def test_the_split_moves_to_the_gpu_once(small_set):
    train = LensingDataset(small_set, "train")
    batches = TrainBatches(train, 4, torch.Generator().manual_seed(0), CUDA)
    assert batches.images.device.type == "cuda"
    images, labels = next(iter(batches))
    assert images.device.type == "cuda" and labels.device.type == "cuda"


def test_fit_on_cuda_writes_checkpoints_that_load_on_a_cpu(small_set, tmp_path):
    out = tmp_path / "run"
    result = fit(config_for(small_set, out), progress=False)
    assert len(result["history"]) == 2
    assert all(np.isfinite(entry["train_loss"]) for entry in result["history"])
    state = load_checkpoint(out / CHECKPOINT)
    assert all(t.device.type == "cpu" for t in state["model"].values())
    model, _ = load_trained_model(out / BEST_MODEL)
    assert next(model.parameters()).device.type == "cpu"


def test_resume_on_cuda_continues_the_epochs(small_set, tmp_path):
    out = tmp_path / "run"
    fit(config_for(small_set, out, epochs=1), progress=False)
    resumed = fit(config_for(small_set, out, epochs=2, resume=True), progress=False)
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2]


def test_cuda_probabilities_agree_with_the_cpu(small_set, tmp_path):
    out = tmp_path / "run"
    fit(config_for(small_set, out, epochs=1), progress=False)
    model, _ = load_trained_model(out / BEST_MODEL)
    val = LensingDataset(small_set, "val")
    cpu, labels = predict_split(model, val, device="cpu", precision="fp32")
    gpu, gpu_labels = predict_split(model, val, device="cuda", precision="bf16", tta=True)
    np.testing.assert_array_equal(labels, gpu_labels)
    # bf16 and D4 averaging move a probability by little; a wrong device path moves it a lot.
    np.testing.assert_allclose(gpu, cpu, atol=0.1)
    fp32, _ = predict_split(model, val, device="cuda", precision="fp32")
    np.testing.assert_allclose(fp32, cpu, atol=2e-3)


def test_evaluate_on_cuda(small_set, tmp_path):
    out = tmp_path / "run"
    fit(config_for(small_set, out, epochs=1), progress=False)
    metrics = evaluate_checkpoint(
        small_set, out / BEST_MODEL, out_dir=tmp_path / "reports", device="cuda", explain=False
    )
    assert 0.0 <= metrics["auc_macro"] <= 1.0
    assert (tmp_path / "reports" / "metrics.json").is_file()
