"""What a run tells its user while it works: progress bars, and log lines that always appear.

Bars are for people watching (a terminal, or a live widget in JupyterLab) and ``--no-progress``
hides them; log lines (one per epoch, one per search trial) go to standard output always, so
a batch job, a cluster queue or a headless notebook run still has its record. A headless
notebook run (``lensing.cli.run``) sets ``LENSING_NO_BARS=1``: bars there would be saved as stale
``0%|`` lines in the executed notebook.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

NO_BARS_ENV = "LENSING_NO_BARS"  # set to 1 to hide every bar, whatever the caller asks
T = TypeVar("T")


def bars_wanted(asked: bool = True) -> bool:
    """True when a bar should be drawn: the caller asks for one and the environment allows."""
    return asked and os.environ.get(NO_BARS_ENV, "") not in ("1", "true", "yes")


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
