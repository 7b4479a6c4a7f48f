"""The command line: ``python -m lensing COMMAND [options]``.

Every command is a module ``lensing.cli.<name>`` listed in ``COMMANDS``, with two functions:
``build_parser() -> argparse.ArgumentParser`` and ``handle(args) -> int`` (the exit code). A
module imports its heavy work (torch, optuna, lenstronomy) inside ``run``, and ``main`` builds
the parser of the chosen command only, so ``--help`` and ``simulate`` stay quick. Every
command follows the exit codes of ``lensing.cli.options``; ``download`` adds codes of its own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from types import ModuleType

from lensing.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

# Command -> what it does (the usage text). Its parser and handler: lensing.cli.<command>.
COMMANDS: dict[str, str] = {
    "train": "fine-tune ResNet18 with one learning rate per layer group",
    "evaluate": "test AUC, ROC curves and confusion matrix of a checkpoint",
    "search": "resumable grid search over the per-group learning rates",
    "run": "the main job: data, notebook headless, reports",
    "simulate": "write a simulated data set in the real data's format",
    "pretrain": "make the package's lensing weights on simulated lenses",
    "predict": "classify new image files (.npy, FITS) into a CSV",
    "dashboard": "optuna-dashboard on 127.0.0.1 for the search's study",
    "download": "fetch, verify and unpack the real data set into data/dataset",
}


def command_module(name: str) -> ModuleType:
    """The module of command ``name`` (``lensing.cli.<name>``)."""
    return importlib.import_module(f"{__name__}.{name}")


def usage() -> str:
    lines = [f"  {name:<9} {text}" for name, text in sorted(COMMANDS.items())]
    return "usage: python -m lensing COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring).

    A bad option exits through argparse (SystemExit(2)), as usual for a command line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_OK
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(usage())
        print(f"\nunknown command {name!r}; expected one of {', '.join(sorted(COMMANDS))}")
        return EXIT_USAGE
    command = command_module(name)
    args = command.build_parser().parse_args(rest)
    args.argv = rest  # the options as typed (the search's resume hint)
    return run_handled(command.handle, args)


def run_handled(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``handler(args)`` with the exit-code convention applied to the errors it raises: a
    CheckpointError 1, a ValueError or FileNotFoundError 2, another OSError 1."""
    try:
        return int(handler(args) or 0)
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        return fail(error, code)


def _exit_code(error: Exception) -> int | None:
    # CheckpointError is looked up, not imported: its module pulls in torch, which simulate and
    # --help do without, and none can have been raised before it was loaded.
    checkpoint = sys.modules.get("lensing.model.checkpoint")
    if checkpoint is not None and isinstance(error, checkpoint.CheckpointError):
        return EXIT_FAILED
    if isinstance(error, ValueError | FileNotFoundError):
        return EXIT_USAGE
    if isinstance(error, OSError):
        return EXIT_FAILED
    return None
