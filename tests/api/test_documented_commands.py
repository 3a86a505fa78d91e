"""Every ``k3snet`` command the docs show is one the CLI takes.

The pages (``docs/*.md`` and the README) show commands in shell blocks and in inline
code. A renamed or removed flag leaves them telling users to type something that
fails: every ``--flag`` a documented command names must be an option of that
command, and every whole command line of a shell block must parse (optional parts in
``[...]`` taken as given, ``a|b`` as ``a``; a line with ``...`` leaves
arguments out and is checked as a fragment).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

from k3snet import cli
from k3snet._argv import common_after_command

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>\S*)")
_SHELL = frozenset({"", "sh", "bash", "console", "shell", "text"})
_INLINE = re.compile(r"`(k3snet [a-z][^`]*)`")
_OPERATORS = ("|", "&&", "||", ";", "&")


class Command(NamedTuple):
    where: str  # page:line
    text: str
    whole: bool  # a whole command line of a shell block (not a fragment in prose)


def documented_commands(page: Path) -> list[Command]:
    """The ``k3snet`` commands of a page: shell block lines (continuations joined,
    prompts and ``sudo`` dropped) and inline code spans."""
    text = page.read_text()
    found: list[Command] = []
    lines = text.splitlines()
    fence: str | None = None
    info = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _FENCE.match(line)
        if opening is not None:
            if fence is None:
                fence, info = opening["fence"], opening["info"]
            elif line.strip().startswith(fence):
                fence = None
        elif fence is not None and info in _SHELL:
            start = index
            while line.rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
                line = line.rstrip()[:-1] + " " + lines[index]
            command = re.sub(r"^(\$|#|sudo)\s+", "", line.strip())
            # "k3snet explain: error: ..." is output shown in a block, not a command.
            if command.startswith("k3snet ") and not command.split()[1].endswith(":"):
                # "k3snet plan ..." leaves the rest out: checked as a fragment.
                found.append(Command(f"{page.name}:{start + 1}", command,
                                     whole="..." not in command))
        index += 1
    for match in _INLINE.finditer(text):
        line_number = text.count("\n", 0, match.start()) + 1
        found.append(Command(f"{page.name}:{line_number}", match[1], whole=False))
    return found


def _words(command: str) -> list[str]:
    """The words of ``command`` up to its first shell operator or redirection, with
    the usage notation resolved (``[x]`` as ``x``, ``a|b`` as ``a``, ``...`` dropped)."""
    command = re.sub(r"\[([^\]]*)\]", r"\1", command).replace("...", "")
    words: list[str] = []
    for token in shlex.split(command, comments=True):
        if token in _OPERATORS or token.startswith((">", "2>", "<")):
            break
        word = token.rstrip(";")
        if "|" in word and not word.startswith("|"):
            word = word.split("|", 1)[0]
        if word:
            words.append(word)
        if token.endswith(";"):
            break
    return words[1:]  # without "k3snet"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("k3snet's parser has no subcommands")


def _flag_problem(command: Command, subcommands: dict[str, argparse.ArgumentParser]
                  ) -> str | None:
    words = common_after_command(_words(command.text))
    if not words or words[0].startswith("-") or words[0].isupper() or "/" in words[0]:
        return None  # `k3snet --version`, `k3snet WHAT`, `k3snet plan/apply` in prose
    if words[0] not in subcommands:
        return f"{command.where}: `{command.text}`: {words[0]!r} is not a k3snet command"
    options = subcommands[words[0]]._option_string_actions
    unknown = [w.split("=", 1)[0] for w in words[1:]
               if w.startswith("--") and w.split("=", 1)[0] not in options]
    if unknown:
        return (f"{command.where}: `{command.text}` names {', '.join(unknown)}, not an "
                f"option of `k3snet {words[0]}`")
    return None


def _parse_problem(command: Command) -> str | None:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.build_parser().parse_args(common_after_command(_words(command.text)))
        except SystemExit as exc:
            if exc.code != 0:
                last = errors.getvalue().strip().splitlines()[-1:]
                return f"{command.where}: `{command.text}`: {' '.join(last)}"
    return None


def test_the_pages_document_commands() -> None:
    """The scan finds the commands (a broken scan would pass every check below)."""
    found = [command for page in PAGES for command in documented_commands(page)]
    assert sum(command.whole for command in found) >= 20
    assert sum(not command.whole for command in found) >= 50


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_documented_command_is_one_the_cli_takes(page: Path) -> None:
    subcommands = _subcommands()
    problems = [problem for command in documented_commands(page)
                for problem in (_flag_problem(command, subcommands),
                                _parse_problem(command) if command.whole else None)
                if problem is not None]
    assert not problems, "\n".join(problems)


def test_a_renamed_flag_is_caught(tmp_path: Path) -> None:
    """The check fails on a page naming a flag the command does not have, and on a
    shell line that does not parse."""
    page = tmp_path / "page.md"
    page.write_text("Run `k3snet apply -f spec.yaml --lock-timout 5`.\n\n"
                    "```sh\nk3snet plan --spec spec.yaml --out\n```\n")
    subcommands = _subcommands()
    block, inline = sorted(documented_commands(page), key=lambda c: not c.whole)
    assert "--lock-timout" in str(_flag_problem(inline, subcommands))
    assert _flag_problem(block, subcommands) is None
    assert "--out: expected one argument" in str(_parse_problem(block))
