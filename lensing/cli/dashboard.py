"""``python -m lensing dashboard``: optuna-dashboard on 127.0.0.1 for the search's study.

The server and the storage it shows: :mod:`lensing.search.dashboard`.

Exit codes (``lensing.cli.options``): 0 stopped with Ctrl-C after serving; 2 a bad option,
or a storage that cannot be shown (no search database there, an unreachable server) or a
port that cannot be listened on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lensing.cli.options import EXIT_OK, EXIT_USAGE
from lensing.core.constants import MODELS_DIR


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lensing dashboard``."""
    from lensing.search.dashboard import DEFAULT_HOST, DEFAULT_PORT

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


def handle(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C; returns the exit code (module docstring)."""
    from lensing.search.dashboard import (
        DashboardError,
        dashboard_url,
        make_dashboard,
        resolve_storage,
    )
    from lensing.search.storage import redact

    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}; expected 0-65535", file=sys.stderr)
        return EXIT_USAGE
    try:
        url = resolve_storage(args.storage, args.out)
        server, studies = make_dashboard(url, args.host, args.port, args.allow_writes)
    except DashboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
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
    return EXIT_OK
