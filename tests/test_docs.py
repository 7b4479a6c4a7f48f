"""The README and the pages in docs/ stay true to the code.

- docs/design.md's layout block names every module under lensing/, and nothing that is not there;
- every command line the README (and each docs page) shows in a code block parses with that
  command's own parser, option names spelled out in full;
- the README stays a page for users: at most 250 lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from lensing.cli import COMMANDS, command_module

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lensing"
README = ROOT / "README.md"
DESIGN = ROOT / "docs" / "design.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250

# What a command line in a code block starts with (after any VAR=value words): the interpreter
# or torchrun running ``-m lensing``, the installed ``lensing`` script, or download_data.py.
LAUNCHERS = ("python", "python3", "torchrun")
DOWNLOAD_SCRIPT = "download_data.py"
# Words of a synopsis rather than an example: DIR, N, [--force], a|b, INPUT...
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|[\[\]|]|\.\.\.")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def code_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced code block of a Markdown text."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


# ---------------------------------------------------------------------------- the layout


def layout_lines() -> list[str]:
    """The non-blank lines of design.md's code block that starts with the line ``lensing/``."""
    for block in code_blocks(DESIGN.read_text()):
        lines = [line.rstrip() for line in block if line.strip()]
        if lines and lines[0].split()[0] == "lensing/":
            return lines
    raise AssertionError(f"{DESIGN.relative_to(ROOT)} has no code block starting with lensing/")


def documented_modules(lines: list[str]) -> tuple[list[str], list[str]]:
    """The module files the layout names, as paths relative to lensing/ (a package's folder
    line stands for its ``__init__.py``), in order; and the lines that name neither a module
    nor a folder.

    The block is a tree: each line is ``NAME  description``, a child indented deeper than its
    folder (``name/``). The package's tree ends at the first line back at the indentation of
    ``lensing/`` (the repository's other entries). A folder with no module under it holds
    data (``weights/``) and names no module.
    """
    root_indent = len(lines[0]) - len(lines[0].lstrip(" "))
    modules: list[str] = []
    bad: list[str] = []
    folders: list[tuple[int, str]] = []  # the open folders: (indentation, name)
    packages = {""}  # folders with a module under them ("" is lensing/ itself)
    for line in lines[1:]:
        if "\t" in line:
            bad.append(f"{line.strip()!r} (a tab: indent with spaces)")
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent <= root_indent:
            break
        name = line.split()[0]
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parents = [folder for _, folder in folders]
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
        elif name.endswith(".py"):
            modules.append("/".join([*parents, name]))
            packages.update("/".join(parents[:i]) for i in range(len(parents) + 1))
        else:
            bad.append(f"{line.strip()!r} (neither a module name.py nor a folder name/)")
    init_files = [f"{folder}/__init__.py".lstrip("/") for folder in sorted(packages)]
    return modules + [f for f in init_files if f not in modules], bad


def package_modules() -> set[str]:
    """Every module file under lensing/, relative to it."""
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_design_page_lists_every_module():
    listed, bad = documented_modules(layout_lines())
    twice = sorted({m for m in listed if listed.count(m) > 1})
    real = package_modules()
    missing = sorted(real - set(listed))
    extra = sorted(set(listed) - real)
    problems = []
    if missing:
        problems.append("modules under lensing/ the layout does not list: " + ", ".join(missing))
    if extra:
        problems.append("modules the layout lists that do not exist: " + ", ".join(extra))
    if twice:
        problems.append("modules listed more than once: " + ", ".join(twice))
    if bad:
        problems.append("lines that name no module or folder: " + "; ".join(bad))
    assert not problems, "docs/design.md, the Layout block:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------------- command lines


def logical_lines(block: list[str]) -> list[str]:
    """A code block's lines with backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for line in block:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            lines.append(pending + line)
            pending = ""
    return lines + ([pending] if pending else [])


def lensing_command(words: list[str]) -> tuple[str, list[str]] | None:
    """``(command, its arguments)`` when ``words`` run the lensing command line, else None;
    the command is ``""`` for ``python -m lensing`` alone or with --help."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    if words[0] in LAUNCHERS and len(words) > 1 and words[1] == DOWNLOAD_SCRIPT:
        return "download", words[2:]
    if words[0] == "lensing":
        rest = words[1:]
    elif words[0] in LAUNCHERS:
        starts = [i for i in range(1, len(words) - 1) if words[i : i + 2] == ["-m", "lensing"]]
        if not starts:
            return None
        rest = words[starts[0] + 2 :]
    else:
        return None
    if not rest or rest[0] in ("-h", "--help"):
        return "", rest
    return rest[0], rest[1:]


def command_lines(text: str) -> list[tuple[str, str, list[str]]]:
    """``(line, command, arguments)`` for every lensing command line in a text's code blocks."""
    found = []
    for block in code_blocks(text):
        for line in logical_lines(block):
            plain = [word for word in line.split() if not ENV_ASSIGNMENT.match(word)]
            if not plain or plain[0] not in (*LAUNCHERS, "lensing"):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError as error:  # an unclosed quote
                found.append((line.strip(), "?", [f"shlex: {error}"]))
                continue
            command = lensing_command(words)
            if command is not None:
                found.append((line.strip(), *command))
    return found


def parse_problem(command: str, args: list[str]) -> str | None:
    """Why ``args`` do not parse with ``command``'s parser, or None when they do.

    Abbreviated options are refused (``allow_abbrev`` off), so that ``--epoch`` written for
    ``--epochs`` fails here as a renamed option would, rather than passing as a prefix.
    """
    if command == "":
        return None if all(a in ("-h", "--help") for a in args) else "options without a command"
    if command not in COMMANDS:
        return f"unknown command {command!r}; expected one of {', '.join(sorted(COMMANDS))}"
    placeholders = [a for a in args if PLACEHOLDER.search(a)]
    if placeholders:
        return f"placeholders {placeholders}: write the line as a concrete, runnable example"
    parser = command_module(command).build_parser()
    parser.allow_abbrev = False
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as stop:
        if stop.code not in (0, None):
            lines = errors.getvalue().strip().splitlines()
            return lines[-1] if lines else f"argparse exited with {stop.code}"
    return None


def unparsed(lines: list[tuple[str, str, list[str]]]) -> list[str]:
    problems = []
    for line, command, args in lines:
        problem = "; ".join(args) if command == "?" else parse_problem(command, args)
        if problem:
            problems.append(f"{line}\n      -> {problem}")
    return problems


def test_readme_command_lines_parse():
    lines = command_lines(README.read_text())
    problems = unparsed(lines)
    assert not problems, "README.md command lines that do not parse:\n  " + "\n  ".join(problems)
    shown = {command for _, command, _ in lines}
    assert set(COMMANDS) <= shown, f"README.md shows no example of {sorted(set(COMMANDS) - shown)}"
    script = [line for line, _, _ in lines if DOWNLOAD_SCRIPT in line]
    assert script, f"README.md shows no example of python {DOWNLOAD_SCRIPT}"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_docs_command_lines_parse(page: Path):
    problems = unparsed(command_lines(page.read_text()))
    assert not problems, f"docs/{page.name} command lines that do not parse:\n  " + "\n  ".join(
        problems
    )


def test_readme_is_at_most_250_lines():
    count = len(README.read_text().splitlines())
    assert count <= MAX_README_LINES, (
        f"README.md has {count} lines (at most {MAX_README_LINES}): move detail to docs/"
    )
