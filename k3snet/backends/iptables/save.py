"""The ``iptables-save`` text parser: tables, chains with their policies, rules as printed.

Pure and forgiving (comments, counters and unknown lines are skipped): what the
rules *mean* is read by :mod:`k3snet.render.iptables.rules` (k3snet's own chains)
and :mod:`k3snet.backends.iptables.foreign` (everyone else's).
"""

from __future__ import annotations

import re
from typing import Literal

import attrs

from k3snet.render.iptables.rules import whole_rule

__all__ = ["Dump", "Hidden", "TableDump", "parse_save", "stopped_mark", "unread_mark"]

Hidden = Literal["table", "base chains", "stopped", "unread"]
"""What iptables-nft-save said it left out of a table (see :attr:`TableDump.hidden`)."""

# iptables-nft-save's words for an nftables table of its name holding what the xt
# layer cannot show (rules, or base chains, written with nft): comments only, and
# exit status 0. "is incompatible": the table is left out whole; "contains
# incompatible base-chains": the chains printed are whole, the others are not shown.
_INCOMPATIBLE = re.compile(
    r"^# Table `([^']+)' (is incompatible|contains incompatible base-chains)")
# The line the driver puts for a table whose own save stopped at a rule the tool cannot
# print (:func:`stopped_mark`): the other tables were read one by one.
_STOPPED = re.compile(r"^# k3snet: table `([^']+)' stopped the save: ?(.*)$")
# The line it puts for a table whose own save failed before printing any of it
# (:func:`unread_mark`).
_UNREAD = re.compile(r"^# k3snet: table `([^']+)' could not be read: ?(.*)$")


def stopped_mark(table: str, detail: str) -> str:
    """The line standing for ``table`` in a save read table by table when the tool stopped
    at a rule of it it cannot print (``detail``: its words): :attr:`TableDump.hidden`
    ``"stopped"`` to :func:`parse_save`."""
    return f"# k3snet: table `{table}' stopped the save: {' '.join(detail.split())}\n"


def unread_mark(table: str, detail: str) -> str:
    """The line standing for ``table`` in a save read table by table when the tool, asked
    for that table alone, failed before printing any of it (``detail``: its words):
    :attr:`TableDump.hidden` ``"unread"`` to :func:`parse_save`, the words in
    :attr:`TableDump.detail`."""
    return f"# k3snet: table `{table}' could not be read: {' '.join(detail.split())}\n"


@attrs.define
class TableDump:
    """One table of ``iptables-save`` output: chains in order, rules as printed."""

    name: str
    policies: dict[str, str] = attrs.field(factory=dict)
    rules: dict[str, list[str]] = attrs.field(factory=dict)
    hidden: Hidden | None = None
    """What iptables-nft-save left out, saying so in a comment: ``"table"``, all of it
    (it holds rules written with nft that iptables cannot show; nothing of it was
    read), or ``"base chains"`` of the table's own written with nft (the chains read
    are whole, those run besides them); ``"stopped"``: iptables-nft-save stopped at a
    rule of it it cannot decode (one written with nft), nothing of it was read (the
    driver read the family's other tables one by one: :func:`stopped_mark`); ``"unread"``:
    read alone, the tool failed before printing any of it (:func:`unread_mark`), nothing
    of it was read."""
    detail: str | None = None
    """The tool's words for a table ``"stopped"`` or ``"unread"``."""

    def chain(self, name: str) -> list[str]:
        """The rules of a chain as printed (empty if the chain does not exist)."""
        return self.rules.get(name, [])


Dump = dict[str, TableDump]
"""Tables of one ``iptables-save`` run by name."""


def parse_save(text: str) -> Dump:
    """Parse ``iptables-save`` output (any tables; comments and counters ignored, but
    iptables-nft-save's saying that it left part of a table out:
    :attr:`TableDump.hidden`); a comment that holds a newline stays in its rule
    (:func:`~k3snet.render.iptables.rules.whole_rule`)."""
    tables: Dump = {}
    current: TableDump | None = None
    raws = iter(text.split("\n"))
    for raw in raws:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if (hidden := _INCOMPATIBLE.match(line)) is not None:
                dump = tables.setdefault(hidden.group(1), TableDump(hidden.group(1)))
                dump.hidden = "table" if hidden.group(2) == "is incompatible" else "base chains"
            elif (stopped := _STOPPED.match(line) or _UNREAD.match(line)) is not None:
                dump = tables.setdefault(stopped.group(1), TableDump(stopped.group(1)))
                dump.hidden = "stopped" if stopped.re is _STOPPED else "unread"
                dump.detail = stopped.group(2)
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], TableDump(line[1:]))
        elif current is None:
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            current.policies[name] = rest.split(" ", 1)[0]
            current.rules.setdefault(name, [])
        elif line.startswith("-A "):
            body = whole_rule(raw, raws).strip()[3:]
            chain, _, spec = body.partition(" ")
            current.rules.setdefault(chain, []).append(spec)
        elif line.startswith("[") and "] -A " in line:  # `iptables-save -c` counters
            chain, _, spec = whole_rule(raw, raws).strip().split("] -A ", 1)[1].partition(" ")
            current.rules.setdefault(chain, []).append(spec)
        elif line == "COMMIT":
            current = None
    return tables

