"""The base of the image reader: the error it raises, and one file's bytes read safely.

:mod:`lensing.data.readers.image` (the reader), :mod:`lensing.data.readers.npy` and
:mod:`lensing.data.readers.fits` (the two formats) all import this module and it imports
none of them, so the three never form a cycle.
Reading a file's bytes here can neither block (a FIFO), nor follow a loop, nor claim more than
:data:`MAX_FILE_BYTES` of memory. This module imports only the standard library.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_FILE_BYTES = 64 * 2**20  # the largest file (and decompressed FITS) read, in bytes
SHAPES_TEXT = "(H, W), (1, H, W) or (H, W, 1)"  # the accepted image shapes, in words


class ImageError(ValueError):
    """An image file that cannot be used; ``reason`` (also the message) says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_file_bytes(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes (default :data:`MAX_FILE_BYTES`).

    Raises ImageError for anything else: missing, dangling symlink, symlink loop, permission
    denied, not a regular file, empty, over the limit, unreadable.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageError(stat_problem(path, err)) from None
    except ValueError as err:  # an embedded NUL byte in the name
        raise ImageError(f"invalid file name ({err})") from None
    _check_regular(st, limit)
    # O_NONBLOCK: a FIFO swapped in after the stat must not make open() wait for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise ImageError(stat_problem(path, err, action="open")) from None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            _check_regular(st, limit)
            os.set_blocking(fd, True)
            data = f.read(st.st_size + 1)  # one byte more tells a file that is still growing
    except OSError as err:
        raise ImageError(f"cannot read ({err.strerror or err})") from None
    if len(data) != st.st_size:
        raise ImageError(f"file changed size while being read ({st.st_size} -> {len(data)})")
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def stat_problem(path: str | os.PathLike, err: OSError, action: str = "stat") -> str:
    """The reason an ``os.stat`` (or open, or listing) of ``path`` failed, in words."""
    if err.errno == errno.ELOOP:
        return "symlink loop (a symlink that leads back to itself)"
    if err.errno == errno.ENOENT:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symlink (points to {target!r}, which does not exist)"
        return "does not exist"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied (cannot {action})"
    return f"cannot {action} ({err.strerror or err})"


def unstatable_reason(path: str | os.PathLike) -> str | None:
    """Why ``os.stat(path)`` fails (see :func:`stat_problem`), or None when it succeeds."""
    try:
        os.stat(path)
    except OSError as err:
        return stat_problem(path, err)
    except ValueError as err:
        return f"invalid file name ({err})"
    return None


def kind_of(mode: int) -> str:
    """What a stat mode is, in words: ``"regular file"``, ``"folder"``, ``"FIFO"``, ..."""
    kinds = [
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


def image_plane(shape: tuple[int, ...], *, trailing: bool = True) -> tuple[int, int]:
    """(H, W) of an accepted image shape: (H, W), (1, H, W), and (H, W, 1) if ``trailing``.

    Raises ImageError naming the shape otherwise, or when H or W is 0.
    """
    if len(shape) == 2:
        plane = shape
    elif len(shape) == 3 and shape[0] == 1:
        plane = shape[1:]
    elif len(shape) == 3 and shape[2] == 1 and trailing:
        plane = shape[:2]
    else:
        expected = SHAPES_TEXT if trailing else "(H, W) or (1, H, W)"
        raise ImageError(f"shape {tuple(shape)}; expected {expected}")
    if 0 in plane:
        raise ImageError(f"empty image of shape {tuple(shape)}")
    return int(plane[0]), int(plane[1])


def _check_regular(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"not a regular file (a {kind_of(st.st_mode)})")
    if st.st_size > limit:
        raise ImageError(f"file of {st.st_size} bytes; the limit is {limit} bytes")
