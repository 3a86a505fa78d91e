"""One transaction of the nftables backend: its commands, in nft's language or libnftables JSON.

Each apply sends one libnftables batch, which the kernel commits as one
transaction: if any command is refused, the kernel keeps the ruleset as it was.
Batches are written in nft's own language (``syntax="nft"``, the default:
libnftables parses it faster than JSON, and its errors quote the refused
command, which maps a failure to its change) or in libnftables JSON
(``syntax="json"``). This module only sequences: each command is spelled by
:mod:`k3snet.render.nftables_batch` (render/ owns the rule language), and every
value in it is validated, never free text.
"""

from __future__ import annotations

from k3snet.backends.nftables.cache import Key, Table
from k3snet.backends.nftables.text import as_listed
from k3snet.model import NetObject
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    MARKER_CHAIN,
    NAT_CHAIN,
    NFT_RULE_BYTES,
    nft_rule_bytes,
    nft_rules,
    too_large,
)
from k3snet.render.nftables_batch import NftCommands, Syntax

__all__ = ["IMPOSSIBLE_HANDLE", "Batch", "Syntax"]

IMPOSSIBLE_HANDLE = 1 << 62
"""The kernel numbers a table's objects from 1; no table ever gets this far."""


class Batch:
    """The commands of one transaction (nft or JSON syntax), and what they do.

    The commands are spelled by :class:`~k3snet.render.nftables_batch.NftCommands`;
    a batch keeps their order, the change each is for, and what the transaction
    will have made of the table once committed (for the backend's cache).
    """

    def __init__(self, table: str, syntax: Syntax) -> None:
        self.table = table
        self.nft = NftCommands(table, syntax)
        self.json = self.nft.json
        self.commands: list[str] = []
        self.owners: list[int | None] = []  # the change each command is for
        self.added: dict[str, list[tuple[Key, int]]] = {}  # family -> (key, rule slot)
        self.bodies: dict[Key, tuple[str, str]] = {}  # key -> its first rule as nft lists it
        self.marked: list[str] = []
        self.deleted_tables: list[str] = []
        self.created_tables: list[str] = []
        self.created_chains: list[tuple[str, str]] = []
        # (change, why): added rules the kernel would refuse as too long, never sent
        self.too_large: list[tuple[int | None, str]] = []
        # (change, rule, inet): each added rule, ranked by its room only when the kernel
        # refuses one as too large (too_roomy), not on every add
        self.added_objects: list[tuple[int | None, NetObject, bool]] = []

    @property
    def empty(self) -> bool:
        """No command: nothing to send."""
        return not self.commands

    def _emit(self, command: str, owner: int | None = None) -> None:
        self.commands.append(command)
        self.owners.append(owner)

    def delete_table(self, family: str, owner: int | None = None) -> None:
        """Delete k3snet's table of ``family`` (with everything in it)."""
        self.deleted_tables.append(family)
        self._emit(self.nft.delete_table(family), owner)

    def ensure_table(self, family: str, table: Table | None,
                     redeclare: dict[str, int] | None = None) -> None:
        """Create what is missing of the table and its base chains.

        ``redeclare`` maps base chains to declare again (a policy to reset) to
        the change that repairs them.

        What the read found missing is made with ``create``, which the kernel refuses
        when it is there: a table or chain of that name made by another program since
        the read (an administrator's ``inet filter`` under the name k3snet was given,
        a chain with its own policy) aborts the transaction, instead of being taken as
        k3snet's (its policy set to accept, k3snet's rules added to it).
        """
        redeclare = redeclare or {}
        if table is None:
            self.created_tables.append(family)
            self._emit(self.nft.add_table(family, create=True))
        for chain in CHAIN_HOOKS:
            present = table is not None and chain in table.chains
            if present and chain not in redeclare:
                continue
            self.created_chains.append((family, chain))
            self._emit(self.nft.add_base_chain(family, chain, create=not present),
                       redeclare.get(chain))

    def delete_rule(self, family: str, chain: str, handle: int, owner: int | None) -> None:
        """Delete a rule of one of k3snet's chains (their names need no quoting)."""
        self._emit(self.nft.delete_rule(family, chain, handle), owner)

    def add_object(self, family: str, obj: NetObject, owner: int | None) -> None:
        """Append ``obj``'s rules to their chain, for change ``owner``."""
        commands, owners = self.commands, self.owners
        slots = self.added.setdefault(family, [])
        key = obj.key
        problem = too_large(obj, inet=family == "inet")
        if problem is not None:
            self.too_large.append((owner, problem))
        self.added_objects.append((owner, obj, family == "inet"))
        rules = nft_rules(obj, inet=family == "inet")
        self.bodies[key] = (rules[0].chain, as_listed(rules[0].body))  # for the kept read
        for slot, command in enumerate(self.nft.add_rules(family, obj, rules)):
            commands.append(command)
            owners.append(owner)
            slots.append((key, slot))

    def marker(self, family: str, *, exists: bool) -> None:
        """Re-create the empty marker chain: its new handle dates the rules added before it."""
        self.marked.append(family)
        if exists:
            self._emit(self.nft.delete_chain(family, MARKER_CHAIN))
        self._emit(self.nft.add_chain(family, MARKER_CHAIN, create=True))

    def inject_failure(self, change: int, family: str) -> None:
        """Insert a command the kernel refuses before the first command of change ``change``.

        Deleting a rule handle that cannot exist passes libnftables (it keeps no
        rule cache to check it against) and is refused by the kernel in the middle
        of the transaction, which then aborts as a whole.
        """
        position = next((i for i, owner in enumerate(self.owners)
                         if owner is not None and owner >= change), len(self.commands))
        self.commands.insert(position, self.nft.delete_rule(family, NAT_CHAIN, IMPOSSIBLE_HANDLE))
        self.owners.insert(position, change)

    def too_roomy(self, error: str) -> tuple[int | None, str] | None:
        """When the kernel refused a rule as too large (``File too large``: its
        expressions take :data:`NFT_RULE_BYTES` or more, which IPv6 exclusions not
        ending on a byte reach before the count of expressions), the added rule that
        takes the most room, and why (``None``: another refusal, or no rule added)."""
        if "File too large" not in error or not self.added_objects:
            return None
        owner, obj, _ = max(self.added_objects,
                            key=lambda added: nft_rule_bytes(added[1], inet=added[2]))
        return owner, (
            f"the kernel refuses a rule whose expressions take {NFT_RULE_BYTES} bytes or "
            f"more, and the largest of this transaction is {obj.brief()}: give it "
            "fewer exclusions (an IPv6 prefix whose length is not a multiple of 8 takes "
            "the most room, about 128 bytes), or split its destinations into several rules")

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
        """The batch as libnftables takes it."""
        return self.nft.transaction(self.commands)
