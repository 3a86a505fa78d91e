"""What the command line asks, read before argparse (or the CLI's modules) could: the
common options moved after the command, and whether a JSON document is wanted; and the
state of one run (:class:`Run`). Imported by :mod:`k3snet.__main__` before the CLI loads
(and when Ctrl-C comes while it does), so it imports nothing."""

from __future__ import annotations

from collections.abc import Sequence


class Run:
    """What one call of :func:`k3snet.cli.main` has done so far, which decides what a signal
    ending it says. Held by that call (its parsed arguments' ``run``), not by the module:
    a library calling ``main`` from two threads, or again from a signal handler within a
    run, had the two runs clear and fill the same lists (one run's "the change stays" said
    by the other, its error document left out for the other's printed one)."""

    __slots__ = ("document_begun", "document_printed", "made")

    def __init__(self) -> None:
        self.document_begun = False
        """A JSON document was begun on stdout (whole, or cut by a second signal)."""
        self.document_printed = False
        """This run's JSON document is whole on stdout: a signal after it adds none."""
        self.made: list[str] = []
        """What this run's change made, once made (an apply or destroy returned, ``doctor
        --fix``'s fix): a signal after it (destroy reading the backends again, the output
        written) takes nothing back, and says it stays."""


JSON_COMMANDS = frozenset({"plan", "apply", "destroy", "observe", "validate", "doctor"})
"""The commands taking ``--output text|json`` (doctor's ``-o``)."""


def asks_json(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the command first) asks for JSON as argparse would read it
    (``--output json``, ``--output=json``, an abbreviation down to ``--outp``, doctor's
    ``-o json``), looked at only when argparse refused it: a usage error is then an
    ``error`` document too, as a script reading stdout expects."""
    if not argv or argv[0] not in JSON_COMMANDS:
        return False
    wanted = "text"
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        name, equals, value = arg.partition("=")
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        if argv[0] == "doctor" and name.startswith("-o") and name != "-o":
            value = arg[2:]  # -ojson
            name = "-o"
        long = len(name) >= len("--outp") and "--output".startswith(name)
        if long or (argv[0] == "doctor" and name == "-o"):
            wanted = value  # the last one given, as argparse keeps
    return wanted == "json"


COMMON_FLAGS = frozenset({"-q", "--quiet", "--verbose"})
COMMON_VALUED = ("--log-format", "--color")


def common_after_command(argv: list[str]) -> list[str]:
    """``argv`` with the common options given before the command (``k3snet -v plan``)
    moved after it, where the command's parser reads them (``k3snet plan -v``)."""
    moved: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in COMMON_FLAGS or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            moved.append(arg)
        elif arg in COMMON_VALUED and index + 1 < len(argv):
            moved += argv[index:index + 2]
            index += 1
        elif arg.partition("=")[0] in COMMON_VALUED:
            moved.append(arg)
        else:
            break
        index += 1
    if not moved or index >= len(argv) or argv[index].startswith("-"):
        return argv  # no command after them (`k3snet -v`, `k3snet -v --version`): argparse says
    return [argv[index], *moved, *argv[index + 1:]]


