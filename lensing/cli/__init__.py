"""The command line: ``python -m lensing COMMAND [options]``.

``train``, ``evaluate``, ``search`` and ``run`` are parsed in ``lensing.cli.commands``; the
commands of a subpackage with a parser of its own (``simulate``, ``predict``, ``dashboard``)
are handed their arguments. Every command follows the exit codes of ``lensing.cli.options``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from lensing.cli.commands import COMMANDS
from lensing.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

# Commands whose parser and handler live with their subpackage, as ``cli(argv) -> int``.
DELEGATED = {
    "simulate": ("lensing.cli.simulate", "write a simulated data set in the real data's format"),
    "dashboard": (
        "lensing.search.dashboard",
        "optuna-dashboard on 127.0.0.1 for the search's study",
    ),
    "predict": ("lensing.evaluation.classify", "classify new image files (.npy, FITS) into a CSV"),
}


def usage() -> str:
    names = {name: text for name, (text, _, _) in COMMANDS.items()}
    names |= {name: text for name, (_, text) in DELEGATED.items()}
    lines = [f"  {name:<9} {text}" for name, text in sorted(names.items())]
    return "usage: python -m lensing COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name in DELEGATED:
        return int(importlib.import_module(DELEGATED[name][0]).cli(rest) or 0)
    if name not in COMMANDS:
        print(usage())
        known = ", ".join(sorted([*COMMANDS, *DELEGATED]))
        print(f"\nunknown command {name!r}; expected one of {known}")
        return EXIT_USAGE
    _, build, handler = COMMANDS[name]
    args = build().parse_args(rest)
    args.argv = rest
    return run_handled(handler, args)


def run_handled(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``handler(args)`` with the exit-code convention applied to the errors it raises."""
    # Imported here: it pulls in torch, which simulate and --help do without.
    from lensing.training.checkpoint import CheckpointError

    try:
        return int(handler(args) or 0)
    except CheckpointError as error:
        return fail(error, EXIT_FAILED)
    except (ValueError, FileNotFoundError) as error:
        return fail(error, EXIT_USAGE)
    except OSError as error:
        return fail(error, EXIT_FAILED)
