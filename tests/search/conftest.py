"""Shared fixtures of the search tests: the subprocess helpers and a throw-away PostgreSQL server.

``subproc`` runs and watches ``python -m lensing search`` processes (test_search.py and
test_postgres.py); ``pg`` is a running server for the module (test_postgres.py), from
:mod:`pg_server`; ``write_easy_set`` writes a set a few training steps learn (the pruning test).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from pg_server import PostgresUnavailable, postgres_server
from pg_server import free_port as _free_port

from lensing.core.constants import CLASSES, IMAGE_SIZE

REPO = Path(__file__).resolve().parents[2]


class Subprocesses:
    """Start search processes with the repository importable, and read what they leave behind."""

    @staticmethod
    def child_env(threads: int = 2) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
        env["LENSING_ROOT"] = env.get("LENSING_ROOT", "/nonexistent-lensing-root")
        return env

    def run(
        self, command: list[str], timeout: float = 300, **kwargs
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.child_env(),
            **kwargs,
        )
        return done

    def start(self, command: list[str], log: Path, threads: int = 2) -> subprocess.Popen:
        """Start a search writing stdout and stderr to files (a full pipe would stall it)."""
        with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
            return subprocess.Popen(command, stdout=out, stderr=err, env=self.child_env(threads))

    @staticmethod
    def logs(log: Path) -> tuple[str, str]:
        """(stdout, stderr) of a process started with :meth:`start`."""
        return log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()

    def log_text(self, log: Path) -> str:
        """stdout then stderr of a process started with :meth:`start`, as one text."""
        return "".join(self.logs(log))

    @staticmethod
    def checkpoints(out: Path, study: str = "lr_grid") -> dict[str, Path]:
        """{trial key: rolling checkpoint path} of ``study``."""
        return {p.parent.name: p for p in sorted(out.glob(f"trials/{study}/*/checkpoint.pth"))}

    @staticmethod
    def read_epoch(path: Path) -> tuple[int, list[dict]]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["epoch"]), state["history"]


@pytest.fixture(scope="session")
def subproc() -> Subprocesses:
    """The subprocess helpers: child_env, run, start, logs, log_text, checkpoints, read_epoch."""
    return Subprocesses()


@pytest.fixture(scope="session")
def free_port():
    """The function that returns a TCP port free on 127.0.0.1 right now."""
    return _free_port


@pytest.fixture(scope="module")
def pg():
    """A running throw-away server; the module skips when none can be had."""
    try:
        server_context = postgres_server()
        server = server_context.__enter__()
    except PostgresUnavailable as err:
        pytest.skip(f"no PostgreSQL server: {err}")
    try:
        yield server
    finally:
        server_context.__exit__(None, None, None)


def _write_easy_set(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """``counts[split]`` images per class that differ plainly: ``no`` is noise, ``sphere`` a
    bright ring and ``vort`` a bright bar on faint noise. One epoch of a few steps from random
    weights separates them (val AUC well above 0.5), where the shared ``write_set``'s faint
    patterns leave a 1-epoch AUC at chance or below: a pruning test needs a combination that
    really leads."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - IMAGE_SIZE / 2
    shapes = {
        "sphere": np.abs(np.hypot(yy, xx) - 40) < 8,
        "vort": (np.abs(yy) < 8) & (np.abs(xx) < 60),
    }
    for split, n in counts.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                noise = rng.random((IMAGE_SIZE, IMAGE_SIZE))
                image = noise if name == "no" else 0.2 * noise + shapes[name]
                image = (image - image.min()) / (image.max() - image.min())
                np.save(folder / f"{i}.npy", image.reshape(1, IMAGE_SIZE, IMAGE_SIZE))
    return root


@pytest.fixture(scope="session")
def write_easy_set():
    """The function that writes an easily learned set: ``write_easy_set(root, counts)``."""
    return _write_easy_set


@pytest.fixture
def quiet_optuna():
    """Optuna's log at ERROR for the test (its per-trial lines and warnings), then as it was."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(verbosity)
