"""Shared fixtures: small data sets written into temporary folders."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lensing.core.constants import CLASSES, IMAGE_SIZE


def _write_set(
    root: Path,
    counts: dict[str, int],
    *,
    seed: int = 0,
    shape: tuple[int, ...] = (1, IMAGE_SIZE, IMAGE_SIZE),
) -> Path:
    """Write ``counts[split]`` images per class with a faint class-dependent pattern.

    The class signal (a ring for ``sphere``, a bar for ``vort``) is weak but learnable, so a short
    training run on these can beat chance. Files are float64 in [0, 1], named 1.npy, 2.npy, ...
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - IMAGE_SIZE / 2
    radius = np.hypot(yy, xx)
    patterns = {
        "no": np.zeros((IMAGE_SIZE, IMAGE_SIZE)),
        "sphere": np.exp(-(((radius - 30) / 3) ** 2)),
        "vort": np.exp(-((yy / 3) ** 2)) * (np.abs(xx) < 40),
    }
    for split, n in counts.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                image = 0.5 * rng.random((IMAGE_SIZE, IMAGE_SIZE)) + 0.5 * patterns[name]
                image = (image - image.min()) / (image.max() - image.min())
                np.save(folder / f"{i}.npy", image.reshape(shape))
    return root


@pytest.fixture(scope="session")
def write_set():
    """The function that writes a small data set: ``write_set(root, counts, seed=, shape=)``."""
    return _write_set


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory):
    """``module_tmp(name)``: a new folder for a module's fixture, removed when the module ends.

    For fixtures that train and checkpoint (hundreds of MB each): pytest itself keeps every
    module-scoped folder until the whole session ends.
    """
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """4 train, 2 val and 2 test images per class."""
    return _write_set(tmp_path / "set", {"train": 4, "val": 2, "test": 2})


# --- as an unprivileged user ------------------------------------------------------------------

NOBODY = 65534  # uid and gid of "nobody"


def _as_unprivileged(function, *args):
    """``function(*args)`` as a user that file modes bind; its result must pickle.

    Not root: called here. Root, how CI runs, bypasses file modes: it runs in a forked child
    that first drops to uid/gid 65534 ("nobody"). The child does not exec, so it needs no
    access to the interpreter (root's may lie under /root). Skips only where root cannot drop
    its privileges (no CAP_SETUID/CAP_SETGID in the container).
    """
    if os.name != "posix":
        pytest.skip("file modes are POSIX")
    if os.geteuid() != 0:
        return function(*args)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, send the outcome, leave without any cleanup
        try:
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                outcome = ("skip", f"root cannot drop to uid {NOBODY}")
                if os.geteuid() == NOBODY and os.getegid() == NOBODY:
                    outcome = ("ok", function(*args))
            except BaseException as err:  # noqa: BLE001 - reported to the parent
                outcome = ("raised", f"{type(err).__name__}: {err}")
            with os.fdopen(write, "wb") as f:
                pickle.dump(outcome, f)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data) if data else ("raised", "the child died")
    if kind == "skip":
        pytest.skip(value)
    assert kind == "ok", f"as uid {NOBODY}: {value}"
    return value


@pytest.fixture(scope="session")
def as_unprivileged():
    """``as_unprivileged(function, *args)``: ``function(*args)`` as a user file modes bind
    (see ``_as_unprivileged``)."""
    return _as_unprivileged


@pytest.fixture
def open_dir():
    """A fresh folder (mode 0755) that an unprivileged user can reach: pytest's own temporary
    folders sit under a 0700 one of root's when root runs the tests."""
    path = Path(tempfile.mkdtemp(prefix="lensing-perm-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)
