"""One transaction of the nftables backend: its commands, in nft's language or libnftables JSON.

Each apply sends one libnftables batch, which the kernel commits as one
transaction: if any command is refused, the kernel keeps the ruleset as it was.
Batches are written in nft's own language (``syntax="nft"``, the default:
libnftables parses it faster than JSON, and its errors quote the refused
command, which maps a failure to its change) or in libnftables JSON
(``syntax="json"``). Rule text comes from :mod:`k3snet.render.nftables`; every
value in it is validated (addresses, prefixes, interface names limited to
``[A-Za-z0-9_.@+-]``, hex tags), never free text.
"""

from __future__ import annotations

import json
from typing import Literal

from k3snet.backends.nftables.cache import Key, Table
from k3snet.model import NetObject
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    CHAIN_SPECS,
    MARKER_CHAIN,
    NAT_CHAIN,
    nft_rules,
    nft_rules_json,
)

__all__ = ["IMPOSSIBLE_HANDLE", "Batch", "Syntax"]

Syntax = Literal["json", "nft"]
"""How batches are written: libnftables JSON, or nft's own language."""

IMPOSSIBLE_HANDLE = 1 << 62
"""The kernel numbers a table's objects from 1; no table ever gets this far."""


class Batch:
    """The commands of one transaction (nft or JSON syntax), and what they do."""

    def __init__(self, table: str, syntax: Syntax) -> None:
        self.table = table
        self.json = syntax == "json"
        self.commands: list[str] = []
        self.owners: list[int | None] = []  # the change each command is for
        self.added: dict[str, list[tuple[Key, int]]] = {}  # family -> (key, rule slot)
        self.marked: list[str] = []
        self.deleted_tables: list[str] = []
        self.created_tables: list[str] = []
        self.created_chains: list[tuple[str, str]] = []

    @property
    def empty(self) -> bool:
        """No command: nothing to send."""
        return not self.commands

    def _emit(self, command: str, owner: int | None = None) -> None:
        self.commands.append(command)
        self.owners.append(owner)

    def _ref(self, family: str) -> str:
        return f'"family":"{family}","table":"{self.table}"'

    def delete_table(self, family: str, owner: int | None = None) -> None:
        """Delete k3snet's table of ``family`` (with everything in it)."""
        self.deleted_tables.append(family)
        if self.json:
            self._emit(f'{{"delete":{{"table":{{"family":"{family}","name":"{self.table}"}}}}}}',
                       owner)
        else:
            self._emit(f"delete table {family} {self.table}", owner)

    def ensure_table(self, family: str, table: Table | None,
                     redeclare: dict[str, int] | None = None) -> None:
        """Create what is missing of the table and its base chains.

        ``redeclare`` maps base chains to declare again (a policy to reset) to
        the change that repairs them.
        """
        redeclare = redeclare or {}
        if table is None:
            self.created_tables.append(family)
            if self.json:
                self._emit(f'{{"add":{{"table":{{"family":"{family}","name":"{self.table}"}}}}}}')
            else:
                self._emit(f"add table {family} {self.table}")
        for chain, hooks in CHAIN_HOOKS.items():
            present = table is not None and chain in table.chains
            if present and chain not in redeclare:
                continue
            owner = redeclare.get(chain)
            self.created_chains.append((family, chain))
            if self.json:
                spec = ",".join(f'"{k}":{json.dumps(v)}' for k, v in hooks.items())
                self._emit(f'{{"add":{{"chain":{{{self._ref(family)},"name":"{chain}",{spec}}}}}}}',
                           owner)
            else:
                self._emit(f"add chain {family} {self.table} {chain} {{ {CHAIN_SPECS[chain]} }}",
                           owner)

    def delete_rule(self, family: str, chain: str, handle: int, owner: int | None) -> None:
        """Delete a rule of one of k3snet's chains (their names need no quoting)."""
        if self.json:
            self._emit(f'{{"delete":{{"rule":{{{self._ref(family)},"chain":"{chain}",'
                       f'"handle":{handle}}}}}}}', owner)
        else:
            self._emit(f"delete rule {family} {self.table} {chain} handle {handle}", owner)

    def add_object(self, family: str, obj: NetObject, owner: int | None) -> None:
        inet = family == "inet"
        slots = self.added.setdefault(family, [])
        rules = nft_rules(obj, inet=inet)
        exprs = nft_rules_json(obj, inet=inet) if self.json else ()
        for slot, rule in enumerate(rules):
            if self.json:
                self._emit(f'{{"add":{{"rule":{{{self._ref(family)},"chain":"{rule.chain}",'
                           f'"comment":"{rule.comment}","expr":{exprs[slot]}}}}}}}', owner)
            else:
                self._emit(f'add rule {family} {self.table} {rule.chain} {rule.body} '
                           f'comment "{rule.comment}"', owner)
            slots.append((obj.key, slot))

    def marker(self, family: str, *, exists: bool) -> None:
        """Re-create the empty marker chain: its new handle dates the rules added before it."""
        self.marked.append(family)
        if self.json:
            ref = f'{{"chain":{{{self._ref(family)},"name":"{MARKER_CHAIN}"}}}}'
            if exists:
                self._emit(f'{{"delete":{ref}}}')
            self._emit(f'{{"add":{ref}}}')
        else:
            if exists:
                self._emit(f"delete chain {family} {self.table} {MARKER_CHAIN}")
            self._emit(f"add chain {family} {self.table} {MARKER_CHAIN}")

    def inject_failure(self, change: int, family: str) -> None:
        """Insert a command the kernel refuses before the first command of change ``change``.

        Deleting a rule handle that cannot exist passes libnftables (it keeps no
        rule cache to check it against) and is refused by the kernel in the middle
        of the transaction, which then aborts as a whole.
        """
        position = next((i for i, owner in enumerate(self.owners)
                         if owner is not None and owner >= change), len(self.commands))
        if self.json:
            command = (f'{{"delete":{{"rule":{{{self._ref(family)},"chain":"{NAT_CHAIN}",'
                       f'"handle":{IMPOSSIBLE_HANDLE}}}}}}}')
        else:
            command = f"delete rule {family} {self.table} {NAT_CHAIN} handle {IMPOSSIBLE_HANDLE}"
        self.commands.insert(position, command)
        self.owners.insert(position, change)

    def owner_in(self, error: str) -> int | None:
        """The change whose command an nft-syntax error message quotes, if any.

        libnftables repeats the refused command under its message; JSON batches
        get no such location, so for them this is ``None``.
        """
        if self.json:
            return None
        quoted = {line.strip() for line in error.splitlines()}
        return next((owner for command, owner in zip(self.commands, self.owners, strict=True)
                     if owner is not None and command.strip() in quoted), None)

    def text(self) -> str:
        if self.json:
            return '{"nftables":[' + ",".join(self.commands) + "]}"
        return "\n".join(self.commands) + "\n"
