"""The grid search on a real PostgreSQL server: several workers, a kill, a server restart, a
worker on another host.

A throw-away server (the ``pg`` fixture of conftest.py, from :mod:`pg_server`) serves one
database for the whole module; each test has its own study in it. Its test role logs in with a
password (SCRAM-SHA-256), which the URL carries. The workers are real ``python -m lensing
search`` processes on a tiny written data set (4 train, 2 val, 1 test images per class;
ResNet18 from scratch, batch 8, fp32). "Another host" is a worker started in its own UTS
namespace (``unshare --uts``) under another host name: what the search tells hosts apart by.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.trial import TrialState

from lensing.search.recovery import retried_trial
from lensing.search.study import is_duplicate, stepped_aside

pytestmark = pytest.mark.slow

FAST = [
    "--batch-size", "8", "--pretrained", "none", "--precision", "fp32", "--seed", "0",
    "--heartbeat-interval", "1", "--grace-period", "3",
]  # fmt: skip
FOUR = {"early": [1e-5, 1e-4], "middle": [1e-4], "late": [1e-4, 1e-3], "fc": [1e-3]}
THREE = {"early": [1e-4], "middle": [1e-4], "late": [1e-5, 1e-4, 1e-3], "fc": [1e-3]}
ONE = {"early": [1e-4], "middle": [1e-4], "late": [1e-3], "fc": [1e-3]}
OTHER_HOST = "lensing-other-host"
GRACE_S, HEARTBEAT_S = 6, 1  # the other-host test's --grace-period and --heartbeat-interval
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


def wait_for_log(subproc, log: Path, proc: subprocess.Popen, text: str) -> None:
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while text not in subproc.log_text(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{log.name} never said {text!r}:\n{subproc.log_text(log)}")
        time.sleep(0.1)


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
    plain = pg.url
    assert plain.startswith("postgresql://") and f":{pg.password}@" in plain
    engine = sqlalchemy.create_engine(plain)
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select current_user")).scalar() == pg.user
    engine.dispose()
    study = optuna.create_study(storage=plain, study_name="driver-check")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="driver-check", storage=pg.url).trials) == 2


def test_the_role_logs_in_with_its_password_only(pg) -> None:
    """The server really checks the password (SCRAM-SHA-256): the tests' URLs carry one."""
    where = {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "dbname": pg.database}
    for wrong in ("", "wrong-" + pg.password):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**where, password=wrong, connect_timeout=10).close()
    with psycopg.connect(**where, password=pg.password) as conn:
        assert conn.execute("select current_user").fetchone() == (pg.user,)
    admin = {**where, "user": "postgres", "dbname": "postgres"}
    with psycopg.connect(**admin) as conn:
        rules = conn.execute("select user_name, auth_method from pg_hba_file_rules").fetchall()
        stored = conn.execute(
            "select rolpassword from pg_authid where rolname = %s", (pg.user,)
        ).fetchone()[0]
    assert rules == [(["postgres"], "trust"), (["all"], "scram-sha-256")]
    assert stored.startswith("SCRAM-SHA-256$") and pg.password not in stored


# --- three workers, one killed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def three_workers(subproc, pg, data_dir: Path, module_tmp) -> dict:
    """Three workers on a 4-combination grid; the one mid-way through a trial (after its first
    epoch checkpoint) is SIGKILLed and started again."""
    tmp = module_tmp("three")
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


def recorded_epochs(study: optuna.Study) -> set[int]:
    """The epochs the running trials of a study have reported to the server so far."""
    running = study.get_trials(states=(TrialState.RUNNING,))
    return {step for trial in running for step in trial.intermediate_values}


@pytest.fixture(scope="module")
def server_restart(subproc, pg, data_dir: Path, module_tmp) -> dict:
    """One worker on a 3-combination grid. The server goes down once its first trial has
    reported epoch 1, and comes back only after that trial has written its epoch-2
    checkpoint and, for a few seconds, has been trying to report it to the server."""
    tmp = module_tmp("restart")
    out, study_name = tmp / "models", "restart"
    out.mkdir()
    command = worker_command(data_dir, out, THREE, 2, pg.url, study_name)
    log = tmp / "worker"
    worker = subproc.start(command, log, threads=THREADS)
    key = wait_for_epoch(subproc, out, study_name, {log: worker}, {1})
    study = optuna.load_study(study_name=study_name, storage=pg.url)
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while 1 not in recorded_epochs(study) and time.monotonic() < deadline:
        time.sleep(0.1)
    pg.down()
    try:
        wait_for_epoch(subproc, out, study_name, {log: worker}, {2})
        time.sleep(3)  # the worker is at the server's door now, past the grace period
        alive_while_down = worker.poll() is None
        ckpt = subproc.checkpoints(out, study_name)[key]
    finally:
        pg.up()
    code = finish(subproc, {log: worker})[log]
    return {
        "out": out,
        "study": study_name,
        "key": key,
        "alive_while_down": alive_while_down,
        "checkpoint_epoch": subproc.read_epoch(ckpt)[0],
        "worker": (code, subproc.log_text(log)),
    }


def test_server_restart_costs_a_reconnect_not_the_search(pg, server_restart: dict) -> None:
    """docs/scale-out.md's claim: the worker waits for the server, reconnects and trains on."""
    code, text = server_restart["worker"]
    assert server_restart["alive_while_down"], text
    assert code == 0, text
    assert "Traceback" not in text, text  # a dead heartbeat thread prints one and carries on
    assert "reconnecting" in text and "reconnected to the search storage" in text, text
    assert "the search is complete: 3 combinations" in text, text
    study = optuna.load_study(study_name=server_restart["study"], storage=pg.url)
    # Every combination finished by this one worker, in one trial each: nothing failed.
    assert sorted(complete_keys(study)) == sorted(all_keys(THREE))
    assert len(study.trials) == 3
    (first,) = [t for t in study.trials if t.user_attrs["key"] == server_restart["key"]]
    assert sorted(first.intermediate_values) == [1, 2]  # epoch 2 reported after the restart
    assert server_restart["checkpoint_epoch"] == 2


# --- a worker on another host takes over a dead worker's trial ---------------------------------


def other_host_prefix() -> list[str]:
    """The command prefix that runs a process under the host name OTHER_HOST; skips the
    test when this machine cannot (unshare needs root, or CAP_SYS_ADMIN)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare (util-linux) to give a worker another host name")
    script = f'hostname {OTHER_HOST} && exec "$@"'
    prefix = [unshare, "--uts", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "hostname"], capture_output=True, text=True, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != OTHER_HOST:
        pytest.skip(f"cannot run a process under another host name with unshare --uts "
                    f"(rc {probe.returncode}: {probe.stderr.strip()}); it needs root")  # fmt: skip
    return prefix


@pytest.fixture(scope="module")
def other_host(subproc, pg, data_dir: Path, module_tmp) -> dict:
    """Two workers started together on a 1-combination grid (4 epochs), one here and one on
    another host: one takes the trial, the other waits for it. The one training is SIGKILLed
    after an epoch's checkpoint, and the other takes its trial over."""
    prefix = other_host_prefix()
    tmp = module_tmp("other-host")
    out, study_name = tmp / "models", "other_host"
    out.mkdir()
    command = worker_command(data_dir, out, ONE, 4, pg.url, study_name)
    command += ["--grace-period", str(GRACE_S), "--heartbeat-interval", str(HEARTBEAT_S)]
    # Started together, so the one that waits is up before the other has trained much.
    logs = {tmp / "here": command, tmp / "other": [*prefix, *command]}
    procs = {log: subproc.start(cmd, log, threads=THREADS) for log, cmd in logs.items()}
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while True:
        said = {log: subproc.log_text(log) for log in procs}
        holder = [log for log, text in said.items() if "] trial 0:" in text]
        waiter = [log for log, text in said.items() if "waiting for trial 0 on" in text]
        if holder and waiter:
            break
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
            pytest.fail(f"no worker took the trial while the other waited: {said}")
        time.sleep(0.1)
    (holder,), (waiter,) = holder, waiter
    key = wait_for_epoch(subproc, out, study_name, {holder: procs[holder]}, {1, 2, 3})
    procs[holder].kill()
    killed_at = datetime.datetime.now()
    procs[holder].wait()
    killed_epoch, killed_history = subproc.read_epoch(subproc.checkpoints(out, study_name)[key])
    code = finish(subproc, {waiter: procs[waiter]})[waiter]
    hosts = {tmp / "here": os.uname().nodename, tmp / "other": OTHER_HOST}
    return {
        "out": out,
        "study": study_name,
        "key": key,
        "hosts": (hosts[holder], hosts[waiter]),
        "killed_at": killed_at,
        "killed_epoch": killed_epoch,
        "killed_history": killed_history,
        "code": code,
        "logs": [subproc.log_text(holder), subproc.log_text(waiter)],
    }


def test_a_worker_on_another_host_takes_over_after_the_grace_period(
    subproc, pg, other_host: dict
) -> None:
    _, text_b = other_host["logs"]
    host_a, host_b = other_host["hosts"]
    assert {host_a, host_b} == {os.uname().nodename, OTHER_HOST}
    assert other_host["code"] == 0, text_b
    assert f"waiting for trial 0 on {host_a}" in text_b  # B saw A's host
    study = optuna.load_study(study_name=other_host["study"], storage=pg.url)
    # Started together, both workers may queue the combination (the second waits only the
    # grace period for the first's queue): a copy then steps aside for trial 0, as designed.
    # One that looked at the queue as the other emptied it steps aside too, as a stray.
    copies = [t for t in study.trials if is_duplicate(t)]
    assert all(t.user_attrs["duplicate_of"]["holder"] == 0 for t in copies), copies
    trained = [t for t in study.trials if not stepped_aside(t)]
    seen = [(t.number, t.state.name, t.user_attrs, t.system_attrs) for t in study.trials]
    assert len(trained) == 2, seen  # the killed trial and its one retry
    killed, retry = trained
    assert killed.user_attrs["worker"]["host"] == host_a
    assert retry.user_attrs["worker"]["host"] == host_b
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retried_trial(retry) == killed.number
    # Not at once (A's pid is not B's to check, on another host), but once A's heartbeat
    # had been silent for the grace period: A beat at most HEARTBEAT_S before it died.
    waited = (killed.datetime_complete - other_host["killed_at"]).total_seconds()
    assert waited >= GRACE_S - HEARTBEAT_S, (waited, text_b)
    assert retry.datetime_start >= killed.datetime_complete
    # B resumed A's checkpoint: the epochs A trained are kept as they were.
    assert 1 <= other_host["killed_epoch"] < 4
    assert retry.user_attrs["start_epoch"] == other_host["killed_epoch"]
    epoch, history = subproc.read_epoch(
        subproc.checkpoints(other_host["out"], other_host["study"])[other_host["key"]]
    )
    assert epoch == 4 and len(history) == 4
    kept = history[: other_host["killed_epoch"]]
    assert [h["train_loss"] for h in kept] == [
        h["train_loss"] for h in other_host["killed_history"]
    ]


# --- the password ------------------------------------------------------------------------------


def test_password_is_never_printed_or_written(
    pg, three_workers: dict, server_restart: dict, other_host: dict
):
    texts = three_workers["logs"] + [server_restart["worker"][1], *other_host["logs"]]
    assert texts and all("127.0.0.1" in text for text in texts)  # the URL was shown, redacted
    for text in texts:
        assert pg.password not in text
    runs = (three_workers, server_restart, other_host)
    files = [p for run in runs for p in run["out"].rglob("*")]
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
        "wrong password": pg.url.replace(f":{pg.password}@", f":{wrong_password(pg)}@"),
    }


def wrong_password(pg) -> str:
    return "not-" + pg.password[::-1]


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
    cases = ("closed port", "port not a number", "unknown database", "wrong password")
    return {
        case: run_bad_url(subproc, urls[case], tmp_path_factory.mktemp("bad")) for case in cases
    }


@pytest.mark.parametrize(
    "case", ["closed port", "port not a number", "unknown database", "wrong password"]
)
def test_bad_url_never_prints_the_password(pg, bad_url_runs: dict, case: str) -> None:
    done = bad_url_runs[case]
    assert done.returncode != 0
    assert done.stderr.strip()  # it says something
    assert pg.password not in done.stdout + done.stderr
    assert wrong_password(pg) not in done.stdout + done.stderr
    # Nothing was written for a database that could not be reached.
    assert not list(Path(done.args[done.args.index("--out") + 1]).parent.rglob("*.json"))


def test_wrong_password_is_a_clear_error(pg, bad_url_runs: dict) -> None:
    done = bad_url_runs["wrong password"]
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:"), done.stderr
    assert f"postgresql://{pg.user}:***@127.0.0.1" in done.stderr
    assert "password authentication failed" in done.stderr


def test_unreachable_server_is_a_clear_error(bad_url_runs: dict) -> None:
    done = bad_url_runs["closed port"]
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:") and "127.0.0.1" in done.stderr
