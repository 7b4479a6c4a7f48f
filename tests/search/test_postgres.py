"""The grid search on a real PostgreSQL server: several workers, a kill, a server restart.

A throw-away server (the ``pg`` fixture of conftest.py, from :mod:`pg_server`) serves one
database for the whole module; each test has its own study in it. The workers are real
``python -m lensing search`` processes on a tiny written data set (4 train, 2 val, 1 test
images per class; ResNet18 from scratch, batch 8, fp32).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

FAST = [
    "--batch-size", "8", "--pretrained", "none", "--precision", "fp32", "--seed", "0",
    "--heartbeat-interval", "1", "--grace-period", "3",
]  # fmt: skip
FOUR = {"early": [1e-5, 1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
THREE = {"early": [1e-4], "middle": [1e-4], "late": [1e-5, 1e-4, 1e-3], "fc": [1e-3]}
WORKER_TIMEOUT_S = 600
THREADS = 1  # torch threads per worker process


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, write_set) -> Path:
    return write_set(tmp_path_factory.mktemp("data"), {"train": 4, "val": 2, "test": 1})


def worker_command(data: Path, out: Path, grid: dict, epochs: int, url: str, study: str):
    grid_file = out.parent / f"{study}-grid.json"
    grid_file.write_text(json.dumps(grid))
    args = ["--data", str(data), "--out", str(out), "--epochs", str(epochs)]
    args += ["--grid", str(grid_file), "--storage", url, "--study", study, *FAST]
    return [sys.executable, "-m", "lensing", "search", *args]


def wait_for_epoch(subproc, out: Path, study: str, procs: dict, epochs: set[int]) -> str:
    """The key of the first combination whose checkpoint reaches one of ``epochs``."""
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while time.monotonic() < deadline:
        if all(proc.poll() is not None for proc in procs.values()):
            text = "\n".join(f"{log.name}:\n{subproc.log_text(log)}" for log in procs)
            pytest.fail(f"every worker ended before a checkpoint appeared:\n{text}")
        for key, path in subproc.checkpoints(out, study).items():
            try:
                if subproc.read_epoch(path)[0] in epochs:
                    return key
            except (OSError, RuntimeError, KeyError):
                continue  # replaced while we read it: read it next round
        time.sleep(0.1)
    pytest.fail(f"no checkpoint of {study} reached epoch {epochs} in {WORKER_TIMEOUT_S} s")


def finish(subproc, procs: dict[Path, subprocess.Popen]) -> dict[Path, int]:
    codes = {}
    for log, proc in procs.items():
        try:
            codes[log] = proc.wait(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"worker {log.name} did not finish:\n{subproc.log_text(log)}")
    return codes


def complete_keys(study: optuna.Study) -> list[str]:
    return [t.user_attrs["key"] for t in study.get_trials(states=(TrialState.COMPLETE,))]


def all_keys(grid: dict) -> set[str]:
    from lensing.search import grid_combos, trial_key

    groups = ("early", "middle", "late", "fc")
    return {trial_key(dict(zip(groups, combo, strict=True))) for combo in grid_combos(grid)}


# --- the driver --------------------------------------------------------------------------------


def test_plain_postgresql_url_uses_psycopg3(pg) -> None:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; psycopg2 is not installed."""
    plain = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{pg.database}"
    engine = sqlalchemy.create_engine(plain)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select current_user")).scalar() == pg.user
    engine.dispose()
    study = optuna.create_study(storage=plain, study_name="driver-check")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="driver-check", storage=pg.url).trials) == 2


# --- three workers, one killed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def three_workers(subproc, pg, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three workers on a 4-combination grid; the one mid-way through a trial (after its first
    epoch checkpoint) is SIGKILLed and started again."""
    tmp = tmp_path_factory.mktemp("three")
    out, study_name = tmp / "models", "three"
    out.mkdir()
    command = worker_command(data_dir, out, FOUR, 2, pg.url, study_name)
    procs = {
        tmp / f"worker{i}": subproc.start(command, tmp / f"worker{i}", threads=THREADS)
        for i in range(3)
    }
    key = wait_for_epoch(subproc, out, study_name, procs, {1})
    study = optuna.load_study(study_name=study_name, storage=pg.url)
    (running,) = [
        t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("key") == key
    ]
    pid = running.user_attrs["worker"]["pid"]
    (victim_log,) = [log for log, proc in procs.items() if proc.pid == pid]
    victim = procs.pop(victim_log)
    victim.kill()
    victim.wait()
    killed_epoch, killed_history = subproc.read_epoch(subproc.checkpoints(out, study_name)[key])
    procs[tmp / "restarted"] = subproc.start(command, tmp / "restarted", threads=THREADS)
    codes = finish(subproc, procs)
    return {
        "out": out,
        "study": study_name,
        "key": key,
        "killed_trial": running.number,
        "killed_epoch": killed_epoch,
        "killed_history": killed_history,
        "codes": codes,
        "logs": [subproc.log_text(log) for log in [victim_log, *procs]],
    }


def test_three_workers_complete_every_combination_once(subproc, pg, three_workers: dict) -> None:
    for log, code in three_workers["codes"].items():
        assert code == 0, f"{log.name} rc {code}:\n{subproc.log_text(log)}"
    study = optuna.load_study(study_name=three_workers["study"], storage=pg.url)
    done = complete_keys(study)
    assert sorted(done) == sorted(all_keys(FOUR))  # each of the 4 exactly once
    killed = study.trials[three_workers["killed_trial"]]
    assert killed.state == TrialState.FAIL  # failed by a live worker, then re-queued


def test_killed_combination_resumed_from_its_checkpoint(subproc, pg, three_workers: dict) -> None:
    study = optuna.load_study(study_name=three_workers["study"], storage=pg.url)
    key, killed_epoch = three_workers["key"], three_workers["killed_epoch"]
    assert killed_epoch == 1  # killed between its two epochs
    (retry,) = [
        t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs["key"] == key
    ]
    assert retry.number != three_workers["killed_trial"]
    assert retry.user_attrs["start_epoch"] == killed_epoch
    epoch, history = subproc.read_epoch(
        subproc.checkpoints(three_workers["out"], three_workers["study"])[key]
    )
    assert epoch == 2 and len(history) == 2
    # The epochs trained before the kill are kept as they were, not trained again.
    before = [h["train_loss"] for h in three_workers["killed_history"]]
    assert [h["train_loss"] for h in history[:killed_epoch]] == before


# --- the server restarted under a worker -------------------------------------------------------


@pytest.fixture(scope="module")
def server_restart(subproc, pg, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One worker on a 3-combination grid; the server restarts during its first trial; then the
    worker is run again."""
    tmp = tmp_path_factory.mktemp("restart")
    out, study_name = tmp / "models", "restart"
    out.mkdir()
    command = worker_command(data_dir, out, THREE, 2, pg.url, study_name)
    first = subproc.start(command, tmp / "first", threads=THREADS)
    wait_for_epoch(subproc, out, study_name, {tmp / "first": first}, {1})
    pg.restart()
    first_code = finish(subproc, {tmp / "first": first})[tmp / "first"]
    again = subproc.start(command, tmp / "again", threads=THREADS)
    again_code = finish(subproc, {tmp / "again": again})[tmp / "again"]
    return {
        "out": out,
        "study": study_name,
        "first": (first_code, subproc.log_text(tmp / "first")),
        "again": (again_code, subproc.log_text(tmp / "again")),
    }


def test_server_restart_loses_no_combination(pg, server_restart: dict) -> None:
    code, text = server_restart["again"]
    assert code == 0, text
    study = optuna.load_study(study_name=server_restart["study"], storage=pg.url)
    assert sorted(complete_keys(study)) == sorted(all_keys(THREE))


def test_server_restart_worker_goes_on_or_exits_clearly(server_restart: dict) -> None:
    code, text = server_restart["first"]
    assert "Traceback" not in text, text  # a dead heartbeat thread prints one and carries on
    if code == 0:
        assert "the search is complete" in text, text
    else:
        assert "error:" in text and "re-run" in text, text


# --- the password ------------------------------------------------------------------------------


def test_password_is_never_printed_or_written(pg, three_workers: dict, server_restart: dict):
    texts = three_workers["logs"] + [server_restart["first"][1], server_restart["again"][1]]
    assert texts and all("127.0.0.1" in text for text in texts)  # the URL was shown, redacted
    for text in texts:
        assert pg.password not in text
    files = [p for run in (three_workers, server_restart) for p in run["out"].rglob("*")]
    files = [p for p in files if p.is_file()]
    assert any(p.name == "best_params.json" for p in files)
    assert any(p.name == "checkpoint.pth" for p in files)
    for path in files:
        assert pg.password.encode() not in path.read_bytes(), path


def bad_urls(free_port, pg) -> dict[str, str]:
    return {
        "closed port": pg.url_for("postgresql", port=free_port()),
        "port not a number": pg.url.replace(f":{pg.port}/", ":not-a-port/"),
        "unknown database": pg.url.replace(f"/{pg.database}", "/no_such_db"),
    }


def run_bad_url(subproc, url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lensing", "search", "--data", str(tmp_path / "none")]
    command += ["--out", str(tmp_path / "models"), "--epochs", "1", "--storage", url]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env=subproc.child_env(THREADS),
        cwd=tmp_path,
    )


@pytest.fixture(scope="module")
def bad_url_runs(free_port, subproc, pg, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The search started once on each of three bad URLs."""
    urls = bad_urls(free_port, pg)
    cases = ("closed port", "port not a number", "unknown database")
    return {
        case: run_bad_url(subproc, urls[case], tmp_path_factory.mktemp("bad")) for case in cases
    }


@pytest.mark.parametrize("case", ["closed port", "port not a number", "unknown database"])
def test_bad_url_never_prints_the_password(pg, bad_url_runs: dict, case: str) -> None:
    done = bad_url_runs[case]
    assert done.returncode != 0
    assert done.stderr.strip()  # it says something
    assert pg.password not in done.stdout + done.stderr
    # Nothing was written for a database that could not be reached.
    assert not list(Path(done.args[done.args.index("--out") + 1]).parent.rglob("*.json"))


def test_unreachable_server_is_a_clear_error(bad_url_runs: dict) -> None:
    done = bad_url_runs["closed port"]
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and "127.0.0.1" in done.stderr
