"""Atomic writes: a file is either its old complete self or its new complete self, never half."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The name temporary_pattern(path) matches, so remove_stale_temporaries finds it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode any new file would get.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace."""
    return _atomic(Path(path), lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` (no pickling), atomically."""
    return _atomic(Path(path), lambda f: np.save(f, array, allow_pickle=False))


STALE_TMP_S = 3600.0  # a temporary file this old is left over from a killed writer


def remove_stale_temporaries(folder: str | Path, pattern: str, older_than_s: float = STALE_TMP_S):
    """Delete the temporary files matching ``pattern`` in ``folder`` that a killed writer left.

    Only files older than ``older_than_s`` go: a younger one may belong to a writer still at work.
    A file that vanishes or cannot be deleted meanwhile is passed over.
    """
    now = time.time()
    for tmp in Path(folder).glob(pattern):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass


def temporary_pattern(path: str | Path) -> str:
    """The glob of the temporary files the atomic writers make for ``path``."""
    return f".{Path(path).name}.*.tmp"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temporary file, so a crash mid-write keeps the old checkpoint."""
    import torch

    return _atomic(Path(path), lambda f: torch.save(obj, f))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


class AtomicNpyMemmap:
    """A ``.npy`` file filled in place through a memory map, then moved to ``path`` atomically.

    ``self.array`` is a writable ``np.memmap`` of ``shape`` over a temporary file in ``path``'s
    folder, its space reserved up front (``posix_fallocate`` where there is one), so a full disk
    raises OSError here instead of killing the process when a page is first written.
    :meth:`commit` keeps the first ``rows`` rows, syncs the file and renames it to ``path``;
    :meth:`discard` (or leaving the ``with`` block without a commit) deletes it. Until the
    rename nothing at ``path`` changes, so a crash never leaves a half-written file there (only
    a hidden ``.<name>.*.tmp`` beside it).
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        self.committed = False
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            self.array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
            if hasattr(os, "posix_fallocate") and self.array.nbytes:
                fd = os.open(tmp, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, self.array.offset + self.array.nbytes)
                finally:
                    os.close(fd)
        except BaseException:
            self.discard()
            raise

    def commit(self, rows: int | None = None) -> Path:
        """Keep the first ``rows`` rows (all by default), sync and rename to ``path``."""
        array = self.array
        rows = array.shape[0] if rows is None else rows
        if not 0 <= rows <= array.shape[0]:
            raise ValueError(f"rows {rows!r}; expected 0..{array.shape[0]}")
        array.flush()
        offset, dtype, full = array.offset, array.dtype, array.shape
        shape = (rows, *full[1:])
        # Unmapped (when the caller holds no other view) before the file shrinks.
        self.array = None
        del array
        with open(self.tmp, "r+b") as f:
            if rows < full[0]:
                f.write(_npy_header(dtype, shape, offset))
                f.truncate(offset + dtype.itemsize * int(np.prod(shape)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Delete the temporary file (a committed file stays)."""
        self.array = None
        if not self.committed:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicNpyMemmap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], length: int) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``length`` bytes (padded with spaces)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    body = text.encode("latin1")
    pad = length - 10 - len(body) - 1
    if pad < 0 or length - 10 > 0xFFFF:
        raise ValueError(f"a .npy header for shape {shape} does not fit in {length} bytes")
    return b"\x93NUMPY\x01\x00" + (length - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"
