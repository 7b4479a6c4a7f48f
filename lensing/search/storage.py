"""Where a study lives: an Optuna RDB storage with heartbeats, made safe for several workers.

- ``sqlite:///<out>/grid_search.db`` (the default) serves the workers of one machine. Every
  SQLite transaction starts with ``BEGIN IMMEDIATE``: Python's sqlite3 otherwise reads outside
  any transaction, so two workers could both see one queued trial WAITING and both take it.
- ``postgresql://user:password@host:5432/db`` serves workers on many machines, through psycopg
  3 (SQLAlchemy 2.1 maps a plain ``postgresql://`` to it; older SQLAlchemy, which would pick
  psycopg2, gets the URL rewritten to ``postgresql+psycopg://``). Connections are checked
  before use (``pool_pre_ping``), and once a storage has been opened, a new connection that
  the server refuses is tried again every second for up to ``RECONNECT_S``: a restarted server
  costs a reconnect, not the worker (a server that is not there at the start is still an
  error at once). A heartbeat missed while the server is away is logged and retried on the
  next beat.
- A URL's password is never printed: :func:`redact` it first.
- ``open_storage(url, existing=True)`` only looks at a storage a search has made (the
  dashboard, :mod:`lensing.search.dashboard`).
"""

from __future__ import annotations

import random
import re
import sys
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from lensing.core.constants import MODELS_DIR

SEARCH_DB = "grid_search.db"  # the default storage's file in the models folder
HEARTBEAT_INTERVAL_S = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD_S = 30  # seconds without a heartbeat after which a trial counts as dead
MAX_RETRY = 3  # automatic retries of a trial whose worker died (a re-run always retries)
SQLITE_TIMEOUT_S = 60  # a worker waits this long for another's write instead of failing
RECONNECT_S = 300  # a worker waits this long for a lost database server to come back
# What a lost or restarting database server raises: a run stops on it with a clear message.
STORAGE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
STORAGE_ERRORS += (StorageInternalError,)


def default_storage(out_dir: str | Path = MODELS_DIR) -> str:
    """``sqlite:///<out_dir>/grid_search.db`` with an absolute path."""
    return f"sqlite:///{Path(out_dir).resolve() / SEARCH_DB}"


# scheme://user:password@host...: the password runs to the last "@" before a host (no "@",
# "/", "?" or "#" in it), so a password holding "@", ":" or "/" is hidden whole; the user name
# may hold "@" (up to its ":"), as SQLAlchemy parses it. A URL never spans whitespace.
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:/\s]*):\S*@([^@/?#\s]*)")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``, for logs, errors
    and returned values: a storage URL, or an error message that quotes one."""
    return _URL_PASSWORD.sub(r"\1:***@\2", text)


def engine_url(url: str) -> str:
    """The URL SQLAlchemy gets: a plain ``postgresql://`` goes to psycopg 3 when SQLAlchemy
    would otherwise pick psycopg2, which this project does not install."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername != "postgresql":
        return url
    try:
        driver = parsed.get_dialect().driver
    except ImportError:
        driver = "psycopg2"
    if driver == "psycopg2":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class _Storage(RDBStorage):
    """RDBStorage whose heartbeat outlives a database server that is briefly away."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS as err:
            # The heartbeat thread would die with a traceback; the next beat reconnects, and
            # the grace period is several beats long.
            print(
                f"[search] heartbeat of trial id {trial_id} missed ({type(err).__name__}); "
                "retrying on the next beat",
                file=sys.stderr,
                flush=True,
            )


def open_storage(
    url: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    max_retry: int | None = MAX_RETRY,
    *,
    existing: bool = False,
) -> RDBStorage:
    """Optuna RDB storage with heartbeats on, re-queueing trials whose worker died.

    Parameters
    ----------
    url : SQLAlchemy URL: ``sqlite:///path.db`` on one machine, or
        ``postgresql://user:password@host:5432/db`` (psycopg 3) to share a search between
        machines.
    heartbeat_interval : seconds between a running trial's heartbeats.
    grace_period : seconds without a heartbeat after which a running trial is failed and retried.
    max_retry : automatic retries of one combination after dead workers (None: no limit).
    existing : True opens a storage a search has made, to look at it (the dashboard): no
        table is created and the schema version is not checked, no folder is made, no
        heartbeat is set up and nothing is retried; errors are raised as they come (an
        ``sqlalchemy.exc.SQLAlchemyError`` or Optuna's ``StorageInternalError`` on first use).
    """
    if existing:
        return _open_existing(engine_url(url))
    if heartbeat_interval <= 0 or grace_period <= 0:
        raise ValueError(
            f"heartbeat_interval {heartbeat_interval!r} and grace_period {grace_period!r}: "
            "expected positive numbers of seconds"
        )
    if grace_period <= heartbeat_interval:
        raise ValueError(
            f"grace_period {grace_period!r} s must exceed heartbeat_interval "
            f"{heartbeat_interval!r} s, or live trials would be taken for dead ones"
        )
    url = engine_url(url)
    sqlite = url.startswith("sqlite")
    engine_kwargs: dict = {"pool_pre_ping": True}
    if sqlite:
        # isolation_level None: sqlite3 leaves BEGIN to us (see _begin_immediately).
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S, "isolation_level": None}
        path = url.partition(":///")[2]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    storage = _connect(url, engine_kwargs, heartbeat_interval, grace_period, max_retry)
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediately)
    else:
        sqlalchemy.event.listen(storage.engine, "do_connect", _Reconnect(url))
    return storage


class _Reconnect:
    """SQLAlchemy ``do_connect`` hook of an opened storage: a connection the server refuses
    (down, restarting, not yet accepting) is tried again every second for ``RECONNECT_S``."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)

    def __call__(self, dialect, conn_rec, cargs, cparams):  # noqa: ANN001 (SQLAlchemy's)
        deadline, said = time.monotonic() + RECONNECT_S, False
        while True:
            try:
                connection = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as err:
                if time.monotonic() >= deadline:
                    raise
                if not said:
                    reason = redact(str(err).strip().splitlines()[-1] if str(err).strip() else "")
                    _say(f"lost the search storage {self.url} ({type(err).__name__}: {reason}); "
                         f"reconnecting for up to {RECONNECT_S} s")  # fmt: skip
                    said = True
                time.sleep(1)
                continue
            if said:
                _say(f"reconnected to the search storage {self.url}")
            return connection


def _say(message: str) -> None:
    print(f"[search] {message}", file=sys.stderr, flush=True)


def _open_existing(url: str) -> RDBStorage:
    # Reads stay outside write transactions (sqlite3's own default), so watching a search
    # never takes the write lock its workers need.
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        skip_compatibility_check=True,
        skip_table_creation=True,
    )


def _connect(
    url: str, engine_kwargs: dict, heartbeat_interval: int, grace_period: int, max_retry
) -> RDBStorage:
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return _Storage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry_callback(max_retry),
                )
        except sqlalchemy.exc.DBAPIError as err:
            # Workers started together on a new database race to create its tables; the
            # loser finds them made on the next try.
            if attempt == 4:
                raise ConnectionError(
                    f"cannot open the search storage {redact(url)}: "
                    f"{type(err.orig).__name__}: {redact(str(err.orig)).strip()}"
                ) from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _begin_immediately(connection: sqlalchemy.Connection) -> None:
    # Take SQLite's write lock at the start of every transaction, so a read and the write that
    # depends on it (WAITING -> RUNNING, RUNNING -> FAIL) are one atomic step.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def retry_callback(max_retry: int | None) -> RetryHeartbeatStaleTrialCallback:
    """Optuna's callback that queues a copy of a dead trial (its reports inherited)."""
    # The retried trial inherits the reports of the dead one, so a pruner sees the whole
    # learning curve of a resumed combination.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(
            max_retry=max_retry, inherit_intermediate_values=True
        )


def load_study(storage: str | RDBStorage, study_name: str) -> optuna.Study:
    """An existing study; the error lists the studies the storage does hold."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ValueError(
            f"no study {study_name!r} in the search storage; it holds "
            f"{', '.join(map(repr, names)) or 'no study'}"
        ) from None
