"""A throw-away PostgreSQL server for tests: a fresh cluster in a temporary folder.

:func:`postgres_server` finds ``initdb`` and ``pg_ctl`` (on ``PATH`` or in Debian's
``/usr/lib/postgresql/<version>/bin``), installs Debian's ``postgresql`` package when they are
missing and this process may (root with ``apt-get``), and otherwise raises
:class:`PostgresUnavailable` with the reason, for the caller to skip on.

The server listens on 127.0.0.1 only, on a free port, and keeps its unix socket inside the
temporary folder. The test role (``lensing``, whose URL carries its password) logs in with a
password checked by SCRAM-SHA-256, as on a real server; only the server's own superuser, which
sets the role up, is trusted from 127.0.0.1. The server is stopped and removed on exit, also
when the body raised. Durability is switched off (fsync, synchronous_commit): the data is
thrown away anyway, and tests run faster without waiting for the disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lensing.core.atomic import atomic_write_bytes

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_OS_USER = "postgres"  # initdb refuses to run as root; Debian's package makes this user
ROLE = "lensing"
DATABASE = "lensing_search"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, and none could be installed."""


@dataclasses.dataclass
class PostgresServer:
    """A running throw-away server; ``url`` is what ``--storage`` takes."""

    bin_dir: Path
    root: Path  # the temporary folder: data/, sock/, server.log
    port: int
    user: str
    password: str
    database: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return self.url_for("postgresql")

    def url_for(self, scheme: str, port: int | None = None) -> str:
        """The URL with another scheme (``postgresql+psycopg``) or port (a closed one)."""
        port = self.port if port is None else port
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{port}/{self.database}"

    def pg_ctl(self, *args: str, timeout: float = START_TIMEOUT_S) -> str:
        """Run ``pg_ctl -D <data> ARGS`` as the server's OS user; returns its output."""
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return _run_as_server_user(command, timeout)

    def down(self) -> None:
        """Stop the server (fast mode: open connections are cut) until :meth:`up`."""
        self.pg_ctl("-w", "-t", str(START_TIMEOUT_S), "-m", "fast", "stop")

    def up(self) -> None:
        """Start the server again after :meth:`down`."""
        self.pg_ctl("-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_file), "start")

    def restart(self) -> None:
        """Restart the server (fast mode: open connections are cut, as in a real restart)."""
        # -l: a server left holding our output pipes would keep pg_ctl's caller waiting.
        log = str(self.log_file)
        self.pg_ctl("-w", "-t", str(START_TIMEOUT_S), "-l", log, "-m", "fast", "restart")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self.pg_ctl("-w", "-m", "immediate", "stop")


def find_bin_dir() -> Path | None:
    """The folder holding both ``initdb`` and ``pg_ctl``, newest Debian version first."""
    on_path = shutil.which("initdb")
    candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
    versions = sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")), key=_version, reverse=True)
    candidates += versions
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def ensure_bin_dir() -> Path:
    """Find the server binaries, installing Debian's ``postgresql`` when allowed.

    Raises PostgresUnavailable saying why no server can be had.
    """
    found = find_bin_dir()
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            f"{DEBIAN_BIN_GLOB}, and apt-get as root is not available to install them; "
            "expected Debian's `postgresql` package"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (
        [apt, "update"],
        [apt, "install", "-y", "--no-install-recommends", "postgresql"],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"`{' '.join(step)}` failed (rc {done.returncode}): {done.stderr.strip()[-500:]}"
            )
    found = find_bin_dir()
    if found is None:
        raise PostgresUnavailable(
            f"installed `postgresql` but found no initdb/pg_ctl in {DEBIAN_BIN_GLOB}"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command  # an ordinary user owns its cluster itself
    return ["runuser", "-u", SERVER_OS_USER, "--", *command]


def _run_as_server_user(command: list[str], timeout: float) -> str:
    done = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed (rc {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-2000:]}"
        )
    return done.stdout + done.stderr


def _server_user_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, but there is no {SERVER_OS_USER!r} OS user to run initdb as "
            "(Debian's postgresql package creates it)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _configure(server: PostgresServer) -> None:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(server.port),
        "unix_socket_directories": f"'{server.root / 'sock'}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "'32MB'",
        "max_connections": "100",
        "password_encryption": "'scram-sha-256'",
    }
    conf = server.data_dir / "postgresql.conf"
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    _write_server_file(conf, conf.read_text() + "\n# throw-away test server\n" + lines)
    # Only TCP from 127.0.0.1: no unix-socket or remote line at all. The superuser (it creates
    # the role and database) is trusted; every other role needs its password (SCRAM).
    hba = f"host all {SERVER_OS_USER} 127.0.0.1/32 trust\n"
    hba += "host all all 127.0.0.1/32 scram-sha-256\n"
    _write_server_file(server.data_dir / "pg_hba.conf", hba)


def _write_server_file(path: Path, text: str) -> None:
    """Replace a file of the cluster atomically, owned by the server's OS user."""
    atomic_write_bytes(path, text.encode())
    ids = _server_user_ids()
    if ids is not None:
        os.chown(path, *ids)  # the atomic write made it root's, mode 0600


def _create_role_and_database(server: PostgresServer) -> None:
    import psycopg
    from psycopg import sql

    admin = f"host=127.0.0.1 port={server.port} user={SERVER_OS_USER} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(server.user), sql.Literal(server.password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(server.database), sql.Identifier(server.user)
            )
        )


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throw-away server and yield it; stopped and deleted afterwards.

    Raises PostgresUnavailable when no server binaries can be found or installed.
    """
    bin_dir = ensure_bin_dir()
    ids = _server_user_ids()
    # Not under pytest's tmp_path: its parents are root-only (0700), and the server's OS user
    # must reach its own folder.
    root = Path(tempfile.mkdtemp(prefix="lensing-pg-"))
    server = PostgresServer(
        bin_dir=bin_dir,
        root=root,
        port=free_port(),
        user=ROLE,
        password="pw-" + secrets.token_hex(12),
        database=DATABASE,
    )
    try:
        (root / "sock").mkdir()
        if ids is not None:
            for path in (root, root / "sock"):
                os.chown(path, *ids)
        initdb = [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SERVER_OS_USER]
        initdb += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        _run_as_server_user(initdb, timeout=120)
        _configure(server)
        server.pg_ctl("-w", "-t", str(START_TIMEOUT_S), "-l", str(server.log_file), "start")
        _create_role_and_database(server)
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
