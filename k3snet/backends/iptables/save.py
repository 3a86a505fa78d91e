"""The ``iptables-save`` text parser: tables, chains with their policies, rules as printed.

Pure and forgiving (comments, counters and unknown lines are skipped): what the
rules *mean* is read by :mod:`k3snet.render.iptables.rules` (k3snet's own chains)
and :mod:`k3snet.backends.iptables.foreign` (everyone else's).
"""

from __future__ import annotations

import attrs

from k3snet.render.iptables.rules import whole_rule

__all__ = ["Dump", "TableDump", "parse_save"]


@attrs.define
class TableDump:
    """One table of ``iptables-save`` output: chains in order, rules as printed."""

    name: str
    policies: dict[str, str] = attrs.field(factory=dict)
    rules: dict[str, list[str]] = attrs.field(factory=dict)

    def chain(self, name: str) -> list[str]:
        """The rules of a chain as printed (empty if the chain does not exist)."""
        return self.rules.get(name, [])


Dump = dict[str, TableDump]
"""Tables of one ``iptables-save`` run by name."""


def parse_save(text: str) -> Dump:
    """Parse ``iptables-save`` output (any tables; comments and counters ignored); a
    comment that holds a newline stays in its rule
    (:func:`~k3snet.render.iptables.rules.whole_rule`)."""
    tables: Dump = {}
    current: TableDump | None = None
    raws = iter(text.split("\n"))
    for raw in raws:
        line = raw.strip()
        if not line or line.startswith("#"):
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

