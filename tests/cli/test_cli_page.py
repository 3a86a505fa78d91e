"""docs/cli.md, "Options": each command's table lists exactly the options it takes.

Every option of ``k3snet COMMAND --help`` is in the command's table, and every option a
table names is one the command takes; every option says something in ``--help`` too.
The options every command takes (``-v``, ``-q``, ``--log-format``, ``--color``) are
said once, above the tables. (It replaces a check that found each option anywhere under
docs/, written when ``agent --no-kube`` and ``render --flannel-configmap-namespace`` were
in ``--help`` alone: cli.md still lacked most of the agent's options.)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from k3snet.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMON = frozenset({"-h", "--help", "-v", "--verbose", "-q", "--quiet", "--log-format", "--color"})
SHARED_ROW = "the node commands'"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(text: str) -> set[str]:
    """The options a table cell names: the first word of each code span that is one."""
    return {span.split()[0] for span in re.findall(r"`([^`]+)`", text) if span.startswith("-")}


def documented_options(page: str) -> dict[str, set[str]]:
    """Each ``### COMMAND`` section's options under "## Options": its rows' first cells,
    and the options listed in its row of the node commands' shared ones."""
    section = page.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for part in section.split("\n### ")[1:]:
        name, _, body = part.partition("\n")
        options: set[str] = set()
        for row in body.splitlines():
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
            if len(cells) < 2 or set(cells[0]) <= {"-"}:
                continue
            options |= _options(cells[1] if cells[0] == SHARED_ROW else cells[0])
        found[name.strip()] = options
    return found


def test_every_command_has_a_table_of_exactly_its_options() -> None:
    documented = documented_options(PAGE.read_text(encoding="utf-8"))
    commands = _commands()
    assert documented.keys() == commands.keys()
    problems = []
    for name, command in commands.items():
        takes = {o for o in command._option_string_actions if o not in COMMON}
        if missing := sorted(takes - documented[name]):
            problems.append(f"{name}: {missing} not in its table")
        if unknown := sorted(documented[name] - takes):
            problems.append(f"{name}: the table names {unknown}, which it does not take")
    assert not problems, "docs/cli.md, Options:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_argument_says_what_it_is_in_help(name: str) -> None:
    """``--lease-duration``, ``doctor --from`` and ``--output`` were bare names in
    ``--help``."""
    silent = [
        action.option_strings or [action.dest]
        for action in _commands()[name]._actions
        if not action.help
    ]
    assert not silent, f"k3snet {name} --help says nothing of {silent}"


def test_the_tables_are_read() -> None:
    """A scan that found no rows would pass the test above for no command."""
    documented = documented_options(PAGE.read_text(encoding="utf-8"))
    assert {"--out", "-f", "--backend"} <= documented["plan"]
    assert {"--lease-duration", "--lease-retry-period", "--once"} <= documented["agent"]
    assert documented["completion"] == set()


def test_every_positional_choice_is_on_the_page() -> None:
    """``render WHAT`` (each in the table of persistence files) and ``completion SHELL``."""
    page = PAGE.read_text(encoding="utf-8")
    render = next(a for a in _commands()["render"]._actions if a.dest == "what")
    files = page.split("\n## Persistence files\n", 1)[1].split("\n## ", 1)[0]
    assert not [w for w in render.choices or () if f"| `{w}` |" not in files]
    shell = next(a for a in _commands()["completion"]._actions if a.dest == "shell")
    assert all(f"`{s}`" in page or f"completion {s}" in page for s in shell.choices or ())


def test_destroys_help_names_the_backends_it_looks_through_without_backend(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``k3snet destroy --help`` said ``--backend`` defaults to netlink + nftables, the
    defaults ``destroy`` naming no backend stopped using (they left an iptables node's
    masquerade): the page's destroy section says every node backend holding k3snet's
    objects is looked through, and so does ``--help`` now."""
    from k3snet.backends.discover import NODE_BACKENDS  # noqa: PLC0415

    monkeypatch.setenv("COLUMNS", "1000")  # no line broken at an iptables-nft's hyphen
    shown = {name: " ".join(command.format_help().split())
             for name, command in _commands().items()}
    assert "netlink + nftables" not in shown["destroy"]
    assert all(label in shown["destroy"] for label, _, _ in NODE_BACKENDS)
    assert "(default: the spec's, else netlink + nftables;" in shown["plan"]
