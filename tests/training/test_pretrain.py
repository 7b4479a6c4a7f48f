"""``python -m lensing pretrain`` on a tiny corpus: the files it leaves, bounded chunks, and a
kill that loses at most one chunk (a resumed run ends with the weights of one never stopped)."""

from __future__ import annotations

import json

import pytest
import torch

import lensing.training.pretrain as pretrain_module
from lensing.cli import main
from lensing.model.lensing_weights import sha256_of
from lensing.model.network import build_model
from lensing.training.pretrain import pretrain
from lensing.training.pretrain_config import PretrainConfig

pytestmark = pytest.mark.slow


def tiny(out, **changes) -> PretrainConfig:
    values = dict(
        out_dir=str(out),
        images=27,
        chunk_per_class=3,
        replay=2,
        batch_size=4,
        precision="fp32",
        device="cpu",
        workers=1,
        probe_per_class=2,
        probe_every=2,
    )
    return PretrainConfig(**(values | changes))


def test_a_run_leaves_half_precision_weights_a_summary_and_at_most_replay_chunks(tmp_path):
    config = tiny(tmp_path)
    summary = pretrain(config, progress=False)
    weights = tmp_path / pretrain_module.WEIGHTS_NAME
    assert summary["sha256"] == sha256_of(weights)
    saved = torch.load(weights, weights_only=True)
    assert saved["conv1.weight"].dtype == torch.float16 and saved["fc.weight"].shape == (3, 512)
    assert build_model(weights).weights == str(weights)
    assert len(list((tmp_path / "chunks").glob("*.npz"))) <= config.replay
    on_disk = json.loads((tmp_path / pretrain_module.SUMMARY_NAME).read_text())
    assert on_disk["images_seen"] == 9 + 18 + 18 == config.images_seen()
    assert [e["chunk"] for e in on_disk["history"]] == [1, 2, 3]
    assert set(on_disk["probe_auc"]) == {"test-i", "model-a"}
    assert on_disk["corpus"]["base_seed"] >= 1_000_000


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    whole = pretrain(tiny(tmp_path / "whole"), progress=False)
    original = pretrain_module._log_line

    def killed_after_two(entry, config):
        if entry["chunk"] == 2:
            raise KeyboardInterrupt  # after chunk 2's checkpoint, as a Ctrl-C would
        return original(entry, config)

    monkeypatch.setattr(pretrain_module, "_log_line", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(pretrain_module, "_log_line", original)
    state = torch.load(tmp_path / "cut" / pretrain_module.CHECKPOINT_NAME, weights_only=True)
    assert state["chunk"] == 2
    resumed = pretrain(tiny(tmp_path / "cut"), resume=True, progress=False)
    assert [e["chunk"] for e in resumed["history"]] == [1, 2, 3]
    assert resumed["sha256"] == whole["sha256"]


def test_resuming_with_other_options_is_refused(tmp_path):
    pretrain(tiny(tmp_path, images=9), progress=False)
    with pytest.raises(ValueError, match="other"):
        pretrain(tiny(tmp_path, images=9, seed=1), resume=True, progress=False)


def test_the_command_line_runs_a_pretraining(tmp_path, capsys):
    code = main(
        [
            "pretrain",
            "--out",
            str(tmp_path),
            "--images",
            "9",
            "--chunk-per-class",
            "3",
            "--batch-size",
            "4",
            "--workers",
            "2",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--probe-per-class",
            "2",
            "--hold-out",
            "legacy",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Plan (pretrain): 1 chunk(s)" in out and "held out: legacy" in out
    summary = json.loads((tmp_path / pretrain_module.SUMMARY_NAME).read_text())
    assert summary["config"]["hold_out"] == ["legacy"]
    assert "legacy" not in summary["history"][0]["families"]
