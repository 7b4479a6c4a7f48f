"""The command line as a whole: one registry, its usage, the shared training options."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lensing.cli import COMMANDS, command_module, main
from lensing.cli.options import TRAINING_FLAGS, TRAINING_OPTIONS, add_training_options, dest
from lensing.core.constants import LAYER_GROUPS
from lensing.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
EVERY_COMMAND = {
    "train",
    "pretrain",
    "evaluate",
    "search",
    "run",
    "simulate",
    "predict",
    "dashboard",
    "download",
}


def test_registry_lists_every_command_with_its_module() -> None:
    assert set(COMMANDS) == EVERY_COMMAND
    modules = {p.stem for p in (REPO / "lensing" / "cli").glob("*.py")}
    assert modules == EVERY_COMMAND | {"__init__", "options", "choice"}
    for name in COMMANDS:
        module = command_module(name)
        assert callable(module.build_parser) and callable(module.handle), name


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m lensing COMMAND")
    listed = re.findall(r"^  (\w+) ", out, flags=re.M)
    assert listed == sorted(EVERY_COMMAND)


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["frobnicate"]) == 2
    out = capsys.readouterr().out
    assert "unknown command 'frobnicate'; expected one of dashboard, download, evaluate" in out


def test_training_option_table_matches_train_config() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {o.field for o in TRAINING_OPTIONS} <= fields
    assert TRAINING_FLAGS == {dest(o.flag): o.field for o in TRAINING_OPTIONS}
    assert len(set(TRAINING_FLAGS.values())) == len(TRAINING_FLAGS)  # one flag per field
    # The parser stores each option under the name the mapping reads.
    parser = argparse.ArgumentParser()
    add_training_options(parser)
    args = parser.parse_args([])
    assert all(getattr(args, name) is None for name in TRAINING_FLAGS)


def test_training_fields_follow_the_recipe_then_the_options() -> None:
    from lensing.cli.options import training_fields
    from lensing.cli.train import build_parser

    args = build_parser().parse_args(["--recipe", "seed-notebook", "--data", "d", "--lr-fc", "2"])
    fields = training_fields(args)
    assert fields["data_dir"] == "d" and fields["augment"] == "flip-affine"
    assert fields["lr_fc"] == 2.0 and fields["lr_early"] == 1e-4
    assert not any(k.startswith("lr_") for k in training_fields(args, with_rates=False))


def train_config(*argv: str) -> TrainConfig:
    """The TrainConfig of ``lensing train --data d ARGV``."""
    from lensing.cli.options import training_fields
    from lensing.cli.train import build_parser

    return TrainConfig(**training_fields(build_parser().parse_args(["--data", "d", *argv])))


def test_the_default_recipe_from_random_weights_takes_the_from_scratch_rates() -> None:
    """Fine-tuning rates (1e-5 for early layers) are for pretrained weights; a network that
    starts random (--pretrained none, or a d4-resnet without a weights file) gets 1e-3."""
    from lensing.training.recipes import recipe_rates

    def rates(*argv: str) -> dict[str, float]:
        config = train_config(*argv)
        return {g: getattr(config, f"lr_{g}") for g in LAYER_GROUPS}

    fine_tuning, scratch = recipe_rates("default"), recipe_rates("from-scratch")
    assert fine_tuning["early"] < scratch["early"]
    assert rates() == rates("--pretrained", "lensing") == fine_tuning
    assert rates("--pretrained", "none") == rates("--model", "d4-resnet") == scratch
    assert rates("--model", "d4-resnet", "--pretrained", "weights.pth") == fine_tuning
    assert rates("--model", "d4-resnet", "--lr-early", "2e-3")["early"] == 2e-3
    assert rates("--model", "d4-resnet", "--recipe", "seed-notebook") == recipe_rates(
        "seed-notebook"
    )


def test_warmup_sets_the_one_cycle_share_and_refuses_one_outside_0_1() -> None:
    from lensing.cli.options import config_default

    assert train_config().onecycle_warmup == config_default("onecycle_warmup")
    assert train_config("--warmup", "0.1").onecycle_warmup == 0.1
    with pytest.raises(ValueError, match="onecycle_warmup"):
        train_config("--warmup", "1.5")


def test_package_download_help_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lensing", "download", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m lensing download")
    assert "--sha256" in proc.stdout and "Exit codes" in proc.stdout


def test_help_and_simulate_parser_import_no_heavy_module() -> None:
    code = (
        "import sys; from lensing.cli import main, command_module; main(['--help']); "
        "command_module('simulate').build_parser(); "
        "print(sorted(m for m in ('torch', 'optuna', 'lenstronomy') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_argument_parsers_are_made_only_in_the_cli_package() -> None:
    sources = [*(REPO / "lensing").rglob("*.py"), REPO / "download_data.py"]
    found = [
        path.relative_to(REPO).as_posix()
        for path in sources
        if "argparse.ArgumentParser(" in path.read_text()
    ]
    assert found and all(name.startswith("lensing/cli/") for name in found), found
