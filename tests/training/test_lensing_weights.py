"""The shipped lensing weights: their hash, their model card, and a clear error for a damaged
or missing file instead of a random start."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from lensing.model.lensing_weights import (
    MODEL_CARD,
    WEIGHTS_FILE,
    WEIGHTS_SHA256,
    load_lensing_weights,
    save_weights,
    sha256_of,
)
from lensing.model.network import build_model
from lensing.simulate.writer import CORPUS_SEED_BASE


def test_the_shipped_file_has_the_hash_the_package_and_its_card_give():
    assert WEIGHTS_FILE.is_file()
    assert sha256_of(WEIGHTS_FILE) == WEIGHTS_SHA256
    assert WEIGHTS_FILE.stat().st_size < 30e6  # half precision: about 22 MB
    card = MODEL_CARD.read_text()
    assert WEIGHTS_SHA256 in card
    assert "python -m lensing pretrain" in card
    # The card names the corpus's reserved seeds, which no data set may use.
    assert f"{CORPUS_SEED_BASE:,}" in card or str(CORPUS_SEED_BASE) in card
    for family in ("test-i", "model-a", "legacy"):
        assert family in card


def test_a_damaged_file_is_an_error_that_names_both_hashes(tmp_path):
    damaged = tmp_path / "lensing_resnet18.pth"
    shutil.copyfile(WEIGHTS_FILE, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256") as error:
        load_lensing_weights(damaged, WEIGHTS_SHA256)
    assert WEIGHTS_SHA256 in str(error.value) and sha256_of(damaged) in str(error.value)


def test_a_missing_file_is_an_error_and_build_model_does_not_start_random(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="missing"):
        load_lensing_weights(tmp_path / "absent.pth", WEIGHTS_SHA256)
    monkeypatch.setattr(
        "lensing.model.network.load_lensing_weights",
        lambda: load_lensing_weights(tmp_path / "absent.pth", WEIGHTS_SHA256),
    )
    with pytest.raises(ValueError, match="lensing weights are missing"):
        build_model("lensing")


def test_saved_weights_are_half_precision_and_load_back_as_float32(tmp_path):
    torch.manual_seed(0)
    state = build_model("none").state_dict()
    path = tmp_path / "w.pth"
    digest = save_weights(state, path)
    assert digest == sha256_of(path) and re.fullmatch(r"[0-9a-f]{64}", digest)
    loaded = load_lensing_weights(path, digest)
    assert loaded["conv1.weight"].dtype == torch.float32
    assert torch.allclose(loaded["conv1.weight"], state["conv1.weight"], atol=1e-3, rtol=1e-3)
    assert torch.equal(loaded["bn1.num_batches_tracked"], state["bn1.num_batches_tracked"])
