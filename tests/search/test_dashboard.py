"""``python -m lensing dashboard`` (lensing.cli.dashboard, lensing.search.dashboard):
optuna-dashboard served over a small search-like study."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from lensing.cli import main
from lensing.search.dashboard import read_studies, resolve_storage
from lensing.search.storage import SEARCH_DB, redact

REPO = Path(__file__).resolve().parents[2]
GRID = {"early": [1e-5, 1e-4], "middle": [1e-4], "late": [1e-3], "fc": [1e-3]}
STARTUP_TIMEOUT_S = 60


def cli(argv: list[str]) -> int:
    return main(["dashboard", *argv])


@pytest.fixture
def search_db(tmp_path: Path) -> Path:
    """A models folder whose grid_search.db holds a study shaped like the search's."""
    out = tmp_path / "models"
    out.mkdir()
    storage = f"sqlite:///{out / SEARCH_DB}"
    study = optuna.create_study(storage=storage, study_name="lr_grid", direction="maximize")
    study.set_user_attr("grid", GRID)
    dists = {f"lr_{g}": optuna.distributions.CategoricalDistribution(v) for g, v in GRID.items()}
    fixed = {"lr_middle": 1e-4, "lr_late": 1e-3, "lr_fc": 1e-3}
    for number, (early, auc, state) in enumerate(
        [(1e-5, 0.71, "COMPLETE"), (1e-4, 0.83, "COMPLETE"), (1e-4, None, "FAIL")]
    ):
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState[state],
                params={"lr_early": early, **fixed},
                distributions=dists,
                value=auc,
                intermediate_values={1: 0.5, 2: auc or 0.6},
                user_attrs={"key": f"early={early!r}", "epochs_done": 2, "start_epoch": 0}
                | {"worker": {"host": "here", "pid": 100 + number, "trial": number}},
            )
        )
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def wait_for_url(proc: subprocess.Popen, log: Path) -> str:
    """The URL the dashboard prints, once it answers there."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = None
    while time.monotonic() < deadline:
        text = log.read_text()
        if proc.poll() is not None:
            pytest.fail(f"dashboard ended (rc {proc.returncode}):\n{text}")
        found = re.search(r"open (http://\S+)", text)
        if found and url is None:
            url = found.group(1)
        if url is not None:
            try:
                get_json(url.replace("/dashboard/", "/api/meta"))
                return url
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"dashboard did not answer in {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@contextlib.contextmanager
def dashboard(search_db: Path, log: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m lensing dashboard --out search_db --port 0 EXTRA`` running; yields its
    URL and process, and stops it with SIGTERM."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "lensing", "dashboard", "--out", str(search_db)]
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [*command, "--port", "0", *extra], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield wait_for_url(proc, log), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def rename(base: str, study_id: int, name: str) -> int:
    """What the web page sends to rename a study; returns the HTTP status."""
    request = urllib.request.Request(
        f"{base}/api/studies/{study_id}/rename",
        data=json.dumps({"study_name": name}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def study_names(search_db: Path) -> list[str]:
    return optuna.get_all_study_names(f"sqlite:///{search_db / SEARCH_DB}")


@pytest.mark.slow
def test_dashboard_serves_the_study_and_its_trials(search_db: Path, tmp_path: Path) -> None:
    log = tmp_path / "dashboard.log"
    with dashboard(search_db, log) as (url, _):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard/")
        base = url.removesuffix("/dashboard/")
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"<html" in page.read().lower()  # the web app itself
        (summary,) = get_json(f"{base}/api/studies")["study_summaries"]
        assert summary["study_name"] == "lr_grid"
        assert summary["user_attrs"]  # the grid stamped on the study
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
        trials = detail["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Complete", "Fail"]
        assert {p["name"] for p in trials[0]["params"]} == {f"lr_{g}" for g in GRID}
        assert {a["key"] for a in trials[1]["user_attrs"]} >= {"key", "epochs_done", "worker"}
        assert [t["values"] for t in trials[:2]] == [[0.71], [0.83]]
        (best,) = detail["best_trials"]
        assert best["number"] == 1
        # Read-only by default: a change from the web page is refused, and changes nothing.
        assert rename(base, summary["study_id"], "renamed") == 403
        assert study_names(search_db) == ["lr_grid"]
    assert "lr_grid' (3 trials)" in log.read_text()


@pytest.mark.slow
def test_allow_writes_lets_the_page_change_the_study(search_db: Path, tmp_path: Path) -> None:
    """The same change the read-only dashboard refuses goes through with --allow-writes."""
    with dashboard(search_db, tmp_path / "dashboard.log", "--allow-writes") as (url, _):
        base = url.removesuffix("/dashboard/")
        (summary,) = get_json(f"{base}/api/studies")["study_summaries"]
        assert rename(base, summary["study_id"], "renamed") == 201
        assert [s["study_name"] for s in get_json(f"{base}/api/studies")["study_summaries"]] == [
            "renamed"
        ]
    assert study_names(search_db) == ["renamed"]
    renamed = optuna.load_study(study_name="renamed", storage=f"sqlite:///{search_db / SEARCH_DB}")
    assert len(renamed.trials) == 3 and renamed.user_attrs["grid"] == GRID


def test_missing_database_is_an_error_not_a_new_one(tmp_path: Path, capsys) -> None:
    assert cli(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no search database {tmp_path.resolve() / SEARCH_DB}" in err
    assert not (tmp_path / SEARCH_DB).exists()
    with pytest.raises(RuntimeError, match="no search database"):
        resolve_storage(f"sqlite:///{tmp_path}/other.db")


def test_unreachable_server_never_prints_the_password(capsys) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://lensing:s3cret-pw@127.0.0.1:{port}/search"
    assert cli(["--storage", url, "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.out + captured.err
    assert "cannot read the search storage postgresql://lensing:***@127.0.0.1" in captured.err


def test_redact_hides_only_the_password() -> None:
    assert (
        redact("postgresql://u:p4ss@db.example:5432/s") == "postgresql://u:***@db.example:5432/s"
    )
    assert redact("sqlite:////tmp/grid_search.db") == "sqlite:////tmp/grid_search.db"
    assert "p4ss" not in redact("postgresql://u:p4ss@host:notaport/s")
    assert redact("postgresql://u@host:5432/s") == "postgresql://u@host:5432/s"  # no password


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://lens:p@ss@db.example:5432/search",  # '@' in the password
        "postgresql://lens:pa:ss@db.example:5432/search",  # ':' in the password
        "postgresql://lens:p@s:s/x@db.example:5432/search",  # '@', ':' and '/'
    ],
)
def test_redact_hides_passwords_holding_separators(url: str) -> None:
    assert redact(url) == "postgresql://lens:***@db.example:5432/search"
    # Within an error message too, quoted or followed by more text.
    assert redact(f"cannot open {url!r}: refused") == (
        "cannot open 'postgresql://lens:***@db.example:5432/search': refused"
    )


def test_redact_hides_the_password_after_a_user_name_with_an_at_sign() -> None:
    assert redact("postgresql://me@corp:s3cret@db:5432/s") == "postgresql://me@corp:***@db:5432/s"


def test_read_studies_never_creates_tables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(RuntimeError, match="cannot read the search storage"):
        read_studies(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0


def test_busy_port_is_a_clear_error(search_db: Path, capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert cli(["--out", str(search_db), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
