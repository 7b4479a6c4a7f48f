"""What a run tells its user while it works: progress bars, and log lines that always appear.

Bars are for people watching (a terminal, or a live widget in JupyterLab) and ``--no-progress``
hides them; log lines (one per epoch, one per search trial) go to standard output always, so
a batch job, a cluster queue or a headless notebook run still has its record.

Bars are hidden where nobody watches them live and they would be saved as stale ``0%|`` lines:
in a notebook kernel that no live front end started (papermill, ``jupyter nbconvert
--execute``: a kernel that Jupyter Server starts for JupyterLab carries ``JPY_SESSION_NAME``,
one that VS Code starts ``VSCODE_PID``), and wherever ``LENSING_NO_BARS=1`` is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

NO_BARS_ENV = "LENSING_NO_BARS"  # set to 1 to hide every bar, whatever the caller asks
T = TypeVar("T")


# Set in a kernel's environment by the live front ends that start it.
LIVE_FRONTEND_ENV = ("JPY_SESSION_NAME", "VSCODE_PID")


def bars_wanted(asked: bool = True) -> bool:
    """True when a bar should be drawn: the caller asks for one and the environment allows."""
    if not asked or os.environ.get(NO_BARS_ENV, "") in ("1", "true", "yes"):
        return False
    return not headless_kernel()


def headless_kernel() -> bool:
    """True inside a Jupyter kernel that no live front end started (papermill, nbconvert)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return not any(name in os.environ for name in LIVE_FRONTEND_ENV)


def bar(iterable: Iterable[T], *, enabled: bool = True, **options) -> Iterator[T] | tqdm:
    """``iterable`` wrapped in a tqdm bar (a widget in JupyterLab) when bars are wanted, else
    returned as it is. ``options`` go to tqdm (desc, total, unit, leave, ...)."""
    if not bars_wanted(enabled):
        return iter(iterable)
    return tqdm(iterable, **options)


def say(line: str) -> None:
    """Print one log line now (above any bar, flushed so a pipe or a log file sees it)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
