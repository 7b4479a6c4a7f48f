"""``python -m lensing dashboard``: optuna-dashboard on the grid search's study, live.

It opens the same storage as ``python -m lensing search`` (``sqlite:///<out>/grid_search.db``
by default, or ``--storage URL``) and serves optuna-dashboard's web app on 127.0.0.1, so a
running search can be watched from a browser: every combination with its learning rates, its
state, the validation AUC of each epoch, and the user attributes the search stamps on it.

The dashboard is read-only unless ``--allow-writes``: optuna-dashboard's web page can also
delete studies and change trials, which a search still running would not expect.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lensing.constants import MODELS_DIR

DEFAULT_HOST = "127.0.0.1"  # only this machine; say --host 0.0.0.0 to serve a network
DEFAULT_PORT = 8080  # optuna-dashboard's own default
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DB_NAME = "grid_search.db"  # the search's default SQLite file in its models folder


class DashboardError(RuntimeError):
    """A storage the dashboard cannot show (missing file, unreachable server, no tables)."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to print."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL: show only its scheme, it may hold anything
        scheme = url.partition("://")[0] if "://" in url else "?"
        return f"{scheme}://(unparseable URL)"


def resolve_storage(storage: str | None, out_dir: str | Path = MODELS_DIR) -> str:
    """The storage URL to show: ``storage``, or the search's SQLite file in ``out_dir``.

    Raises DashboardError for an SQLite file that does not exist: opening it would create an
    empty database and show nothing, when the real search is somewhere else.
    """
    if storage is None:
        db = Path(out_dir).resolve() / DB_NAME
        storage = f"sqlite:///{db}"
    if storage.startswith("sqlite"):
        path = storage.partition(":///")[2]
        if not path or path == ":memory:":
            raise DashboardError(f"storage {storage!r}; expected an SQLite file of a search")
        if not Path(path).is_file():
            raise DashboardError(
                f"no search database {path}; expected the grid_search.db of a search: run "
                "`python -m lensing search` first, or pass --out DIR or --storage URL"
            )
    return storage


def open_storage(url: str) -> tuple[Any, list[tuple[str, int]]]:
    """Optuna's RDB storage at ``url`` (tables never created) and its studies' (name, trials).

    Raises DashboardError with the password-free URL when it cannot be read.
    """
    import optuna
    import sqlalchemy

    try:
        storage = optuna.storages.RDBStorage(
            url, skip_compatibility_check=True, skip_table_creation=True
        )
        studies = [
            (s.study_name, len(storage.get_all_trials(s._study_id, deepcopy=False)))
            for s in storage.get_all_studies()
        ]
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        # Optuna wraps the driver's error; its message names host, port and database but
        # never the password.
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        raise DashboardError(
            f"cannot read the search storage {redact(url)}: {_first_line(cause)}"
        ) from None
    except (ImportError, ValueError) as error:  # no such driver, a malformed URL
        raise DashboardError(f"cannot open the search storage {redact(url)}: {error}") from None
    return storage, studies


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def read_only(app: Any) -> Any:
    """Wrap a WSGI app so that only reading requests reach it (403 for the rest)."""

    def guarded(environ: dict, start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = b'{"reason": "read-only dashboard; start it with --allow-writes to change it"}'
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the page polls; a slow query must not hold up the next request


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # the page polls every few seconds: one line each would bury what matters


def make_dashboard(
    storage_url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_writes=False
) -> tuple[WSGIServer, list[tuple[str, int]]]:
    """A bound, not yet serving, dashboard server and the studies it shows.

    ``port`` 0 picks a free port (``server.server_port`` says which).
    """
    from optuna_dashboard import wsgi

    storage, studies = open_storage(storage_url)
    app = wsgi(storage)
    if not allow_writes:
        app = read_only(app)
    try:
        server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as error:
        raise DashboardError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; expected a free port "
            "(pass --port N, or 0 for any free one)"
        ) from None
    return server, studies


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lensing dashboard",
        description="Watch the grid search live in optuna-dashboard (read-only by default).",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--storage", help="the search's SQLAlchemy URL (default sqlite:///<out>/grid_search.db)"
    )
    where.add_argument(
        "--out", type=Path, default=MODELS_DIR, help="the search's models folder (%(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port, 0 for any free one (%(default)s)"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (%(default)s: this machine)"
    )
    parser.add_argument(
        "--allow-writes",
        action="store_true",
        help="let the web page delete studies and change trials (off: read-only)",
    )
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}; expected 0-65535", file=sys.stderr)
        return 2
    try:
        url = resolve_storage(args.storage, args.out)
        server, studies = make_dashboard(url, args.host, args.port, args.allow_writes)
    except DashboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    listed = ", ".join(f"{name!r} ({n} trials)" for name, n in studies) or "no study yet"
    print(f"[dashboard] {redact(url)}: {listed}", flush=True)
    print(f"[dashboard] open {dashboard_url(args.host, server.server_port)}", flush=True)
    print("[dashboard] Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\n[dashboard] stopped", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
