"""The command line: ``python -m lensing {simulate,train,search,evaluate,run} ...``.

Each sub-command lives in its module as ``cli(argv)``; it is imported only when called, so
``python -m lensing simulate`` does not pay for torch and ``--help`` stays quick.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "simulate": ("lensing.simulate", "write a simulated data set in the real data's format"),
    "train": ("lensing.train", "fine-tune ResNet18 with one learning rate per layer group"),
    "search": ("lensing.search", "resumable grid search over the per-group learning rates"),
    "evaluate": ("lensing.evaluate", "test AUC, ROC curves and confusion matrix of a checkpoint"),
    "run": ("lensing.run", "the main job: data, notebook headless, reports"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
        print("usage: python -m lensing COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}")
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.cli(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
