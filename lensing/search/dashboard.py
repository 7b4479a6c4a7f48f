"""``python -m lensing dashboard``: optuna-dashboard on the grid search's study, live.

It opens the same storage as ``python -m lensing search`` (``sqlite:///<out>/grid_search.db``
by default, or ``--storage URL``) and serves optuna-dashboard's web app on 127.0.0.1, so a
running search can be watched from a browser: every combination with its learning rates, its
state, the validation AUC of each epoch, and the user attributes the search stamps on it.

The dashboard is read-only unless ``--allow-writes``: optuna-dashboard's web page can also
delete studies and change trials, which a search still running would not expect.

The storage is opened, and its password hidden, by :mod:`lensing.search.storage`; the command
line (options, exit codes) is :mod:`lensing.cli.dashboard`.
"""

from __future__ import annotations

import socketserver
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lensing.core.constants import MODELS_DIR
from lensing.search.storage import SEARCH_DB, default_storage, open_storage, redact

DEFAULT_HOST = "127.0.0.1"  # only this machine; say --host 0.0.0.0 to serve a network
DEFAULT_PORT = 8080  # optuna-dashboard's own default
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class DashboardError(RuntimeError):
    """A storage the dashboard cannot show (missing file, unreachable server, no tables)."""


def resolve_storage(storage: str | None, out_dir: str | Path = MODELS_DIR) -> str:
    """The storage URL to show: ``storage``, or the search's SQLite file in ``out_dir``.

    Raises DashboardError for an SQLite file that does not exist: opening it would create an
    empty database and show nothing, when the real search is somewhere else.
    """
    if storage is None:
        storage = default_storage(out_dir)
    if storage.startswith("sqlite"):
        path = storage.partition(":///")[2]
        if not path or path == ":memory:":
            raise DashboardError(f"storage {storage!r}; expected an SQLite file of a search")
        if not Path(path).is_file():
            raise DashboardError(
                f"no search database {path}; expected the {SEARCH_DB} of a search: run "
                "`python -m lensing search` first, or pass --out DIR or --storage URL"
            )
    return storage


def read_studies(url: str) -> tuple[Any, list[tuple[str, int]]]:
    """The search storage at ``url`` (``open_storage(url, existing=True)``: tables never
    created) and its studies' (name, number of trials).

    Raises DashboardError with the password-free URL when it cannot be read.
    """
    import optuna
    import sqlalchemy

    try:
        storage = open_storage(url, existing=True)
        studies = [
            (s.study_name, s.n_trials)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        ]
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        # Optuna wraps the driver's error; its message names host, port and database but
        # never the password.
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        raise DashboardError(
            f"cannot read the search storage {redact(url)}: {redact(_first_line(cause))}"
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

    storage, studies = read_studies(storage_url)
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
