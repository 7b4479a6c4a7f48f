"""Tests for lensing.search: the grid, and the resumable search run as real processes.

The slow tests start ``python -m lensing search`` in subprocesses on a tiny written data set
(4 train, 3 val, 1 test images per class; ResNet18 from scratch, batch 8, fp32) and really
kill them: SIGKILL mid-trial, SIGINT (Ctrl-C), two workers at once on one SQLite file.
``tests/fixtures/search_v1/`` holds a study written by the GridSampler version of the search, and
``tests/fixtures/search_v2/`` one written by the queue version that took its trials through
Optuna's storage (commit f5537d4); each has one combination finished and one killed mid-trial,
and today's search must resume both.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from lensing.cli import main
from lensing.cli.search import build_parser as search_parser
from lensing.search import (
    DEFAULT_GRID,
    Combo,
    SearchError,
    continue_training,
    format_table,
    grid_size,
    load_grid,
    redact,
    results_table,
    run_search,
    trial_key,
    validate_grid,
)
from lensing.search.recovery import retried_trial
from lensing.search.storage import engine_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OLD_STUDY = FIXTURES / "search_v1"
V2_STUDY = FIXTURES / "search_v2"
# A launcher that keeps SIGINT raising KeyboardInterrupt even when the test runner was started
# in the background (where SIGINT is ignored, and Python would inherit that).
LAUNCH = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from lensing.__main__ import main; sys.exit(main())"
)
FAST = [
    "--batch-size", "8", "--pretrained", "none", "--precision", "fp32", "--seed", "0",
    "--heartbeat-interval", "1", "--grace-period", "3",
]  # fmt: skip
TWO = {"early": [1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
FOUR = {"early": [1e-5, 1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
ONE = {"early": [1e-4], "middle": [1e-4], "late": [1e-3], "fc": [1e-3]}
# Two combinations, the second with a head learning rate so large that the head's outputs
# saturate: its val AUC is 0.5 (one constant prediction), far below the first's after one
# epoch on the easy set. The grid's order (ascending rates) trains the good one first.
LAGGING = {"early": [1e-3], "middle": [1e-3], "late": [1e-3], "fc": [1e-3, 10.0]}


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, write_set) -> Path:
    return write_set(tmp_path_factory.mktemp("data"), {"train": 4, "val": 3, "test": 1})


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(json.dumps(grid))
    return path


def search_command(data: Path, out: Path, grid: Path, epochs: int, *extra: str) -> list[str]:
    args = ["search", "--data", str(data), "--out", str(out), "--epochs", str(epochs)]
    return [sys.executable, "-c", LAUNCH, *args, "--grid", str(grid), *FAST, *extra]


def load(out: Path, study: str = "lr_grid") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{out}/grid_search.db")


def wait_for(
    subproc, out: Path, proc: subprocess.Popen, ready, log: Path, timeout: float = 240
) -> dict:
    """Poll the trial checkpoints until ``ready({key: epoch})``; returns that mapping."""
    seen: dict[Path, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"search ended (rc {proc.returncode}) too early:\n{subproc.logs(log)}")
        for path in subproc.checkpoints(out).values():
            try:
                mtime = path.stat().st_mtime_ns
                if seen.get(path, (None,))[0] != mtime:
                    seen[path] = (mtime, subproc.read_epoch(path)[0])
            except (OSError, RuntimeError, KeyError):
                continue  # replaced while we read it: read it next round
        epochs = {path.parent.name: epoch for path, (_, epoch) in seen.items()}
        if ready(epochs):
            return epochs
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for checkpoints; saw {seen}")


def complete_params(study: optuna.Study) -> list[tuple]:
    return [
        tuple(sorted(t.params.items()))
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    ]


def copy_old_study(fixture: Path, out: Path) -> tuple[optuna.trial.FrozenTrial, ...]:
    """Copy a fixture's study to ``out``, with a stand-in ``best_model.pth`` in the folder of
    its finished trial (the real weights, 45 MB, are left out of the fixtures); returns (the
    finished trial, the killed one)."""
    out.mkdir()
    shutil.copy(fixture / "grid_search.db", out / "grid_search.db")
    before = load(out)
    (finished,) = before.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    (killed,) = before.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    folder = out / "trials" / "lr_grid" / trial_key(finished.params)
    folder.mkdir(parents=True)
    stand_in = {"model": {}, "params": dict(finished.params), "val_auc": finished.value}
    stand_in |= {"epoch": 1, "history": [{"epoch": 1, "val_auc": finished.value}]}
    torch.save(stand_in | {"classes": ["no", "sphere", "vort"], "pretrained": False},
               folder / "best_model.pth")  # fmt: skip
    return finished, killed


# --- the grid ----------------------------------------------------------------------------------


def test_default_grid_is_small_and_valid() -> None:
    assert validate_grid(DEFAULT_GRID) == DEFAULT_GRID
    assert grid_size(DEFAULT_GRID) == 4


def test_load_grid_normalizes(tmp_path: Path) -> None:
    grid = {"fc": [1e-3, 1e-3], "late": [1e-3, 1e-4], "middle": [1e-4], "early": [1, 1e-5]}
    loaded = load_grid(write_grid(tmp_path / "g.json", grid))
    assert list(loaded) == ["early", "middle", "late", "fc"]
    assert loaded == {"early": [1e-5, 1.0], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({**ONE, "head": [1e-3]}, "unknown layer group(s) 'head'"),
        ({k: v for k, v in ONE.items() if k != "late"}, "missing layer group(s) 'late'"),
        ({**ONE, "fc": []}, "'fc' must be a non-empty list"),
        ({**ONE, "fc": 1e-3}, "'fc' must be a non-empty list"),
        ({**ONE, "early": [0.0]}, "must be a positive, finite number"),
        ({**ONE, "early": [-1e-4]}, "must be a positive, finite number"),
        ({**ONE, "middle": ["1e-4"]}, "'1e-4' of 'middle' is not a number"),
        ({**ONE, "middle": [True]}, "True of 'middle' is not a number"),
        ([1e-4, 1e-3], "expected a JSON object"),
    ],
)
def test_bad_grid_file_names_the_file(tmp_path: Path, grid, words: str) -> None:
    path = write_grid(tmp_path / "bad.json", grid)
    with pytest.raises(ValueError) as err:
        load_grid(path)
    assert str(path) in str(err.value)
    assert words in str(err.value)


def test_unreadable_grid_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"early": [1e-4,')
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_grid(broken)
    with pytest.raises(ValueError, match="cannot read grid file"):
        load_grid(tmp_path / "missing.json")


def test_cli_reports_a_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path / "bad.json", {**ONE, "fc": []})
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "m"), "--grid", str(path)]
    assert main(["search", *argv]) == 2
    err = capsys.readouterr().err
    assert f"grid file {path}" in err and "'fc' must be a non-empty list" in err
    assert not (tmp_path / "m" / "grid_search.db").exists()


def test_trial_key_is_stable() -> None:
    params = {"lr_fc": 1e-3, "lr_early": 1e-5, "lr_late": 1e-4, "lr_middle": 0.0001}
    assert trial_key(params) == "early=1e-05_middle=0.0001_late=0.0001_fc=0.001"
    assert trial_key({"early": 1e-5, "middle": 1e-4, "late": 1e-4, "fc": 1e-3}) == trial_key(
        params
    )
    combo = Combo.from_params(params)
    assert combo.key == trial_key(params) and Combo.from_key(combo.key) == combo
    assert combo.params == {"lr_early": 1e-5, "lr_middle": 1e-4, "lr_late": 1e-4, "lr_fc": 1e-3}
    assert combo.rates == {"early": 1e-5, "middle": 1e-4, "late": 1e-4, "fc": 1e-3}
    with pytest.raises(ValueError, match="expected the form"):
        Combo.from_key("early=1e-05_late=0.001")


def test_storage_urls_hide_passwords_and_use_psycopg3() -> None:
    url = "postgresql://lens:s3cret@db.example:5432/search"
    assert redact(url) == "postgresql://lens:***@db.example:5432/search"
    assert "s3cret" not in redact(url) and redact("sqlite:////a/b.db") == "sqlite:////a/b.db"
    # SQLAlchemy 2.1 maps a plain postgresql:// to psycopg 3; older ones get it spelled out.
    assert engine_url(url) in (url, url.replace("postgresql://", "postgresql+psycopg://"))


def test_search_command_takes_no_progress_and_quiet() -> None:
    args = search_parser().parse_args(["--no-progress", "--augment", "seed"])
    assert args.no_progress and not args.quiet and args.augment == "seed"
    assert search_parser().parse_args(["--quiet"]).quiet


def test_changed_grid_or_settings_for_a_study_is_refused(tmp_path: Path) -> None:
    out, nowhere = tmp_path / "m", tmp_path / "no-data"
    # The study is created and stamped with its grid before the data is read (which fails).
    with pytest.raises(FileNotFoundError):
        run_search(nowhere, out, epochs=2, grid=TWO, progress=False)
    with pytest.raises(SearchError, match="new --study name"):
        run_search(nowhere, out, epochs=2, grid=FOUR, progress=False)
    with pytest.raises(SearchError, match="epochs: study 2, now 3"):
        run_search(nowhere, out, epochs=3, grid=TWO, progress=False)
    # The same grid, written in another order, is the same grid.
    shuffled = {"fc": [1e-3], "late": [1e-3, 1e-4], "middle": [1e-4], "early": [1e-4]}
    with pytest.raises(FileNotFoundError):
        run_search(nowhere, out, epochs=2, grid=shuffled, progress=False)
    # A new study name in the same storage is a new search.
    with pytest.raises(FileNotFoundError):
        run_search(nowhere, out, epochs=2, grid=FOUR, study_name="wide", progress=False)
    # "seed" is the old name of "flip-affine": a study stamped with either resumes with both.
    for first, second in (("seed", "flip-affine"), ("flip-affine", "seed")):
        name = f"aug-{first}"
        for augment in (first, second):
            with pytest.raises(FileNotFoundError):
                run_search(
                    nowhere, out, epochs=2, grid=TWO, study_name=name, progress=False,
                    base_config={"augment": augment},
                )  # fmt: skip
    with pytest.raises(SearchError, match="augment: study 'flip-affine', now 'd4'"):
        run_search(
            nowhere, out, epochs=2, grid=TWO, study_name="aug-seed", progress=False,
            base_config={"augment": "d4"},
        )  # fmt: skip


def test_results_table_counts_epochs_saved_by_pruning(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=storage, study_name="lr_grid", direction="maximize")
    study.set_user_attr("grid", FOUR)
    study.set_user_attr("settings", {"epochs": 5})
    dists = {f"lr_{g}": optuna.distributions.CategoricalDistribution(FOUR[g]) for g in FOUR}
    base = {"lr_early": 1e-5, "lr_middle": 1e-4, "lr_fc": 1e-3}
    study.add_trial(
        optuna.trial.create_trial(
            params=base | {"lr_late": 1e-4}, distributions=dists, value=0.9,
            user_attrs={"epochs_done": 5},
        )
    )  # fmt: skip
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, params=base | {"lr_late": 1e-3},
            distributions=dists, intermediate_values={1: 0.6, 2: 0.7},
            user_attrs={"epochs_done": 2},
        )
    )  # fmt: skip
    table = results_table(storage=storage)
    assert len(table) == 4
    assert list(table.columns[:7]) == [
        "lr_early", "lr_middle", "lr_late", "lr_fc", "val_auc", "epochs", "state",
    ]  # fmt: skip
    assert list(table["state"]) == ["COMPLETE", "PRUNED", "WAITING", "WAITING"]
    assert table["val_auc"].iloc[0] == 0.9 and table["val_auc"].iloc[1] == 0.7
    assert list(table["epochs_saved"]) == [0, 3, 0, 0]
    assert table.attrs["epochs_saved"] == 3
    text = format_table(table)
    assert text.count("\n") == 5 and "| PRUNED" in text


def test_results_table_without_a_search(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no search database"):
        results_table(out_dir=tmp_path)


# --- kill and resume ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_and_resumed(subproc, module_tmp, data_dir: Path) -> dict:
    """A 2-combination search, SIGKILLed when one combination has finished its 3 epochs and
    the other is mid-way, then run again to the end."""
    tmp = module_tmp("kill")
    out, grid = tmp / "models", write_grid(tmp / "grid.json", TWO)
    command = search_command(data_dir, out, grid, 3)
    log = tmp / "first"
    proc = subproc.start(command, log)
    epochs = wait_for(
        subproc, out, proc, lambda e: 3 in e.values() and {1, 2} & set(e.values()), log
    )
    proc.kill()
    proc.wait()
    finished = next(key for key, epoch in epochs.items() if epoch == 3)
    killed = next(key for key in epochs if key != finished)
    ckpts = subproc.checkpoints(out)
    before = {
        "killed_epoch": subproc.read_epoch(ckpts[killed])[0],
        "killed_history": subproc.read_epoch(ckpts[killed])[1],
        "finished_mtime": ckpts[finished].stat().st_mtime_ns,
        "states": {t.number: t.state.name for t in load(out).trials},
    }
    resumed = subproc.run(command)
    return {
        "out": out,
        "command": command,
        "killed": killed,
        "finished": finished,
        "before": before,
        "resumed": resumed,
    }


@pytest.mark.slow
def test_killed_trial_resumes_from_its_checkpoint(subproc, killed_and_resumed: dict) -> None:
    out, killed = killed_and_resumed["out"], killed_and_resumed["killed"]
    before, resumed = killed_and_resumed["before"], killed_and_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "RUNNING" in before["states"].values()  # the kill left a dead trial behind
    assert 1 <= before["killed_epoch"] < 3

    study = load(out)
    done = complete_params(study)
    assert len(done) == 2 and len(set(done)) == 2  # each combination exactly once
    (retry,) = [
        t
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs["key"] == killed
    ]
    assert retried_trial(retry) in before["states"]
    assert retry.user_attrs["start_epoch"] == before["killed_epoch"]
    assert "retrying trial" in resumed.stdout

    epoch, history = subproc.read_epoch(subproc.checkpoints(out)[killed])
    assert epoch == 3 and len(history) == 3
    # The epochs before the kill are the very ones in the final history, not re-trained.
    kept = history[: before["killed_epoch"]]
    assert [h["train_loss"] for h in kept] == [h["train_loss"] for h in before["killed_history"]]
    # The combination that had finished was not touched.
    assert (
        subproc.checkpoints(out)[killed_and_resumed["finished"]].stat().st_mtime_ns
        == (before["finished_mtime"])
    )


@pytest.mark.slow
def test_best_model_and_params_are_published(killed_and_resumed: dict) -> None:
    out = killed_and_resumed["out"]
    study = load(out)
    best = json.loads((out / "best_params.json").read_text())
    assert best["val_auc"] == pytest.approx(study.best_value)
    assert best["trial"] == study.best_trial.number
    assert {g: best[g] for g in ("early", "middle", "late", "fc")} == {
        g: study.best_params[f"lr_{g}"] for g in ("early", "middle", "late", "fc")
    }
    model = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    for key in ("model", "params", "classes", "val_auc", "trial_key", "history", "pretrained"):
        assert key in model
    assert model["trial_key"] == best["trial_key"] and model["pretrained"] is False
    assert model["val_auc"] == pytest.approx(best["val_auc"])
    assert len(model["history"]) == 3

    table = results_table(out_dir=out)
    assert list(table["state"]) == ["COMPLETE", "COMPLETE"]
    assert table["val_auc"].is_monotonic_decreasing
    assert table["val_auc"].iloc[0] == pytest.approx(best["val_auc"])
    assert list(table["epochs"]) == [3, 3]


@pytest.mark.slow
def test_rerun_of_a_finished_search_trains_nothing(subproc, killed_and_resumed: dict) -> None:
    out = killed_and_resumed["out"]
    files = [*subproc.checkpoints(out).values(), out / "best_model.pth", out / "best_params.json"]
    mtimes = [p.stat().st_mtime_ns for p in files]
    n_trials = len(load(out).trials)
    again = subproc.run(killed_and_resumed["command"])
    assert again.returncode == 0, again.stderr
    assert "the search is complete: nothing to train" in again.stdout
    assert "epoch 1/3" not in again.stdout + again.stderr
    assert len(load(out).trials) == n_trials
    assert [p.stat().st_mtime_ns for p in files] == mtimes


@pytest.mark.slow
def test_continue_training_extends_the_best_trial(killed_and_resumed: dict) -> None:
    out = killed_and_resumed["out"]
    before = json.loads((out / "best_params.json").read_text())
    summary = continue_training(out, additional_epochs=1, progress=False)
    assert summary["trial_key"] == before["trial_key"]
    assert summary["epochs_trained"] == 1 and summary["epochs_total"] == 4
    assert summary["before"] == pytest.approx(before["val_auc"])
    assert summary["improved"] == (summary["after"] > summary["before"])
    after = json.loads((out / "best_params.json").read_text())
    expected = summary["after"] if summary["improved"] else before["val_auc"]
    assert after["val_auc"] == pytest.approx(expected)


# --- pruning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_halving_prunes_the_lagging_combination(subproc, tmp_path: Path, write_easy_set) -> None:
    """``--prune halving`` really stops a combination: the one that lags after its first epoch
    is PRUNED there, and the table and the log count the epoch it did not train."""
    data = write_easy_set(tmp_path / "easy", {"train": 4, "val": 3, "test": 1})
    out, grid = tmp_path / "models", write_grid(tmp_path / "grid.json", LAGGING)
    extra = ["--prune", "halving", "--schedule", "plateau", "--augment", "none"]
    command = search_command(data, out, grid, 2, *extra, "--batch-size", "4")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=subproc.child_env(threads=1)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    study = load(out)
    good, lagging = sorted(study.trials, key=lambda t: t.params["lr_fc"])
    assert good.state == optuna.trial.TrialState.COMPLETE, good
    assert good.intermediate_values[1] > 0.5 + 0.1  # the lead the pruner compares against
    assert lagging.state == optuna.trial.TrialState.PRUNED, lagging.intermediate_values
    assert lagging.intermediate_values[1] < good.intermediate_values[1]
    assert sorted(lagging.intermediate_values) == [1]  # stopped after epoch 1 of 2
    assert lagging.user_attrs["epochs_done"] == 1
    # Its checkpoint stopped there too: the pruner stopped the training, not only the record.
    key = trial_key({g: v[-1] for g, v in LAGGING.items()})
    assert subproc.read_epoch(subproc.checkpoints(out)[key])[0] == 1
    table = results_table(out_dir=out)
    assert list(table["state"]) == ["COMPLETE", "PRUNED"]
    assert list(table["epochs_saved"]) == [0, 1] and table.attrs["epochs_saved"] == 1
    assert f"trial {lagging.number}: {key} pruned after epoch 1" in done.stdout
    assert "pruning saved 1 epoch(s)" in done.stdout
    best = json.loads((out / "best_params.json").read_text())
    assert best["trial"] == good.number and best["fc"] == 1e-3


# --- Ctrl-C, corrupt checkpoints, two workers --------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(
    subproc, tmp_path: Path, data_dir: Path
) -> None:
    out, grid = tmp_path / "models", write_grid(tmp_path / "grid.json", ONE)
    command = search_command(data_dir, out, grid, 3)
    log = tmp_path / "first"
    proc = subproc.start(command, log)
    wait_for(subproc, out, proc, lambda e: 1 in e.values(), log)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    stdout, stderr = subproc.logs(log)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted during trial 0" in stderr
    assert "To resume, run: python -m lensing search --data" in stderr
    (trial,) = load(out).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    (ckpt,) = subproc.checkpoints(out).values()
    stopped_at = subproc.read_epoch(ckpt)[0]  # loads: the checkpoint is intact

    resumed = subproc.run(command)
    assert resumed.returncode == 0, resumed.stderr
    assert "queued again" in resumed.stdout
    study = load(out)
    (done,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert done.user_attrs["start_epoch"] == stopped_at
    assert subproc.read_epoch(ckpt)[0] == 3


@pytest.mark.slow
def test_corrupt_trial_checkpoint_restarts_that_combination(
    subproc, tmp_path: Path, data_dir: Path
) -> None:
    out, grid = tmp_path / "models", write_grid(tmp_path / "grid.json", ONE)
    key = trial_key({g: v[0] for g, v in ONE.items()})
    bad = out / "trials" / "lr_grid" / key / "checkpoint.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 a zip cut short by a crash")
    done = subproc.run(search_command(data_dir, out, grid, 1))
    assert done.returncode == 0, done.stderr
    assert "unreadable checkpoint" in done.stderr and str(bad) in done.stderr
    assert "from scratch" in done.stderr
    (moved,) = bad.parent.glob("checkpoint.pth.corrupt-*")
    assert moved.read_bytes().startswith(b"PK\x03\x04 a zip")
    (trial,) = load(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trial.user_attrs["start_epoch"] == 0
    assert subproc.read_epoch(bad)[0] == 1


@pytest.mark.slow
def test_two_workers_share_the_grid_without_duplicates(
    subproc, tmp_path: Path, data_dir: Path
) -> None:
    out, grid = tmp_path / "models", write_grid(tmp_path / "grid.json", FOUR)
    command = search_command(data_dir, out, grid, 1)
    workers = [subproc.start(command, tmp_path / f"worker{i}", threads=1) for i in range(2)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=400) == 0, subproc.logs(tmp_path / f"worker{i}")
    study = load(out)
    done = complete_params(study)
    assert len(done) == 4 and len(set(done)) == 4
    # No combination was trained by both workers: each logs one start line per trained trial.
    started = [
        key
        for i in range(2)
        for key in re.findall(
            r"\[search\] trial \d+: (\S+) \(", subproc.logs(tmp_path / f"worker{i}")[0]
        )
    ]
    assert sorted(started) == sorted(set(started)) and len(started) == 4
    assert all(subproc.read_epoch(p)[0] == 1 for p in subproc.checkpoints(out).values())
    assert len(subproc.checkpoints(out)) == 4
    assert not math.isnan(json.loads((out / "best_params.json").read_text())["val_auc"])


@pytest.mark.slow
def test_a_study_of_the_grid_sampler_version_resumes(
    subproc, tmp_path: Path, data_dir: Path
) -> None:
    """The fixture: trial 0 COMPLETE, trial 1 RUNNING with a dead worker (SIGKILL), settings
    stamped with augment "seed"; the weights files are left out (45 MB), trial 0's stand-in
    is written here."""
    out = tmp_path / "models"
    finished, killed = copy_old_study(OLD_STUDY, out)
    done = subproc.run(search_command(data_dir, out, OLD_STUDY / "grid.json", 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"retrying trial {killed.number}" in done.stdout
    assert "1/2 combinations finished" in done.stdout

    study = load(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(trial_key(t.params) for t in complete) == sorted(
        trial_key(t.params) for t in (finished, killed)
    )
    (retry,) = [t for t in complete if t.number != finished.number]
    assert retried_trial(retry) == killed.number
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[finished.number].datetime_complete == finished.datetime_complete
    assert subproc.read_epoch(subproc.checkpoints(out)[trial_key(killed.params)])[0] == 1
    assert list(results_table(out_dir=out)["state"]) == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_study_of_the_storage_queue_version_resumes(
    subproc, tmp_path: Path, data_dir: Path
) -> None:
    """The fixture (tests/fixtures/search_v2/README.md): written by the search of commit
    f5537d4, which took queued trials through Optuna's storage and beat its own heartbeat.
    Trial 0 COMPLETE, trial 1 RUNNING with a dead worker (SIGKILL in its only epoch)."""
    out = tmp_path / "models"
    finished, killed = copy_old_study(V2_STUDY, out)
    done = subproc.run(search_command(data_dir, out, V2_STUDY / "grid.json", 1))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/2 combinations finished" in done.stdout
    assert f"retrying trial {killed.number}" in done.stdout
    # The finished combination is not trained again: one trial started, the killed one's.
    started = re.findall(r"\[search\] trial \d+: (\S+) \(", done.stdout)
    assert started == [killed.user_attrs["key"]], done.stdout

    study = load(out)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.user_attrs["key"] for t in complete) == sorted(
        t.user_attrs["key"] for t in (finished, killed)
    )
    (retry,) = [t for t in complete if t.number != finished.number]
    assert retried_trial(retry) == killed.number and retry.params == killed.params
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[finished.number].datetime_complete == finished.datetime_complete
    assert subproc.read_epoch(subproc.checkpoints(out)[killed.user_attrs["key"]])[0] == 1
    assert list(results_table(out_dir=out)["state"]) == ["COMPLETE", "COMPLETE"]
    best = json.loads((out / "best_params.json").read_text())
    assert best["trial"] == study.best_trial.number
    model = torch.load(out / "best_model.pth", map_location="cpu", weights_only=True)
    assert model["trial_key"] == best["trial_key"] == study.best_trial.user_attrs["key"]
