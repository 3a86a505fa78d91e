"""nftables batch commands: the edits of k3snet's table, in nft's language or libnftables JSON.

Pure text, like :mod:`k3snet.render.nftables` whose rules it wraps: the
:mod:`nftables backend <k3snet.backends.nftables>` decides which edits one
transaction needs, in which order, and sends them; this module only spells each
edit, in nft's own language (``syntax="nft"``, what ``nft -f`` reads) or as a
libnftables JSON command object (``syntax="json"``).

JSON commands are written as text rather than through :func:`json.dumps` (a
10k-rule batch renders several times faster). Every value in a command is
k3snet's: a validated table name, an nft family, one of k3snet's chains, a
kernel handle, or rule text from :func:`~k3snet.render.nftables.nft_rules`
(validated addresses, prefixes, interface names and hex tags), or the fixed comment
that marks k3snet's table, never free text.

>>> nft = NftCommands("k3snet", "nft")
>>> nft.delete_rule("inet", "postrouting", 7)
'delete rule inet k3snet postrouting handle 7'
>>> print(nft.transaction([nft.add_table("inet"), nft.add_chain("inet", "handle_marker")]))
add table inet k3snet { comment "k3snet's own table: k3snet rewrites and deletes it"; }
add chain inet k3snet handle_marker
<BLANKLINE>
>>> NftCommands("k3snet", "json").delete_rule("inet", "postrouting", 7)
'{"delete":{"rule":{"family":"inet","table":"k3snet","chain":"postrouting","handle":7}}}'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal, cast

from k3snet.errors import ModelError
from k3snet.model import NetObject
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    CHAIN_SPECS,
    TABLE_COMMENT,
    NftRule,
    nft_rules,
    nft_rules_json,
    validate_nft_name,
    validate_table_name,
)

__all__ = ["NftCommands", "Syntax", "list_command", "validate_syntax"]

Syntax = Literal["json", "nft"]
"""How commands are written: libnftables JSON, or nft's own language."""


def validate_syntax(syntax: str) -> Syntax:
    """Return ``syntax`` if it is one commands can be written in (``"nft"`` or ``"json"``)."""
    if syntax in ("json", "nft"):
        return cast("Syntax", syntax)
    raise ModelError(f"syntax must be 'json' or 'nft', got {syntax!r}")


def list_command(kind: str, ref: Mapping[str, str]) -> str:
    """The libnftables JSON command ``list KIND REF...`` (``ref``: ``family``, ``table``,
    ``name``; empty for ``ruleset``).

    JSON, so any table or chain name, even one nft's own language would take for
    a keyword, is passed as data.

    >>> list_command("chain", {"family": "inet", "table": "k3snet", "name": "forward"})
    '{"nftables": [{"list": {"chain": {"family": "inet", "table": "k3snet", "name": "forward"}}}]}'
    >>> list_command("ruleset", {})
    '{"nftables": [{"list": {"ruleset": null}}]}'
    """
    return json.dumps({"nftables": [{"list": {kind: dict(ref) or None}}]})


class NftCommands:
    """The commands that edit k3snet's table ``table`` (in each nft family), in one ``syntax``.

    Each method returns one command (:meth:`add_rules`: one per kernel rule of
    the object) as text; :meth:`transaction` joins commands into the text of one
    batch, which libnftables commits as one kernel transaction.
    """

    __slots__ = ("_heads", "_refs", "json", "syntax", "table")

    def __init__(self, table: str, syntax: Syntax = "nft") -> None:
        self.syntax = validate_syntax(syntax)
        # nft's language cannot name a table after one of its words; JSON can.
        self.table = validate_table_name(table) if syntax == "json" else validate_nft_name(table)
        self.json = syntax == "json"
        self._refs: dict[str, str] = {}
        self._heads: dict[str, str] = {}

    def _ref(self, family: str) -> str:
        """The JSON members naming the table of ``family`` (made once per family)."""
        ref = self._refs.get(family)
        if ref is None:
            ref = self._refs[family] = f'"family":"{family}","table":"{self.table}"'
        return ref

    def add_table(self, family: str, *, create: bool = False) -> str:
        """Create k3snet's (empty) table of ``family``, marked as k3snet's by its comment
        (:data:`~k3snet.render.nftables.TABLE_COMMENT`; libnftables 1.0.6 ignores a
        table's comment in JSON). ``create``: spelled ``create``, which the kernel
        refuses (``File exists``) when a table of that name is there, instead of
        ``add``, which takes an existing table as it is."""
        verb = "create" if create else "add"
        if self.json:
            return (f'{{"{verb}":{{"table":{{"family":"{family}","name":"{self.table}",'
                    f'"comment":{json.dumps(TABLE_COMMENT)}}}}}}}')
        return f'{verb} table {family} {self.table} {{ comment "{TABLE_COMMENT}"; }}'

    def delete_table(self, family: str) -> str:
        """Delete k3snet's table of ``family``, with everything in it."""
        if self.json:
            return f'{{"delete":{{"table":{{"family":"{family}","name":"{self.table}"}}}}}}'
        return f"delete table {family} {self.table}"

    def add_base_chain(self, family: str, chain: str, *, create: bool = False) -> str:
        """Declare base chain ``chain`` (``postrouting`` or ``forward``) with k3snet's hook,
        priority and policy (declared again, an existing chain gets them back;
        ``create``: refused by the kernel if a chain of that name is there)."""
        verb = "create" if create else "add"
        if self.json:
            spec = ",".join(f'"{k}":{json.dumps(v)}' for k, v in CHAIN_HOOKS[chain].items())
            return f'{{"{verb}":{{"chain":{{{self._ref(family)},"name":"{chain}",{spec}}}}}}}'
        return f"{verb} chain {family} {self.table} {chain} {{ {CHAIN_SPECS[chain]} }}"

    def add_chain(self, family: str, name: str, *, create: bool = False) -> str:
        """Create the regular (hookless, empty) chain ``name`` (``create``: refused by
        the kernel if a chain of that name is there)."""
        verb = "create" if create else "add"
        if self.json:
            return f'{{"{verb}":{{"chain":{{{self._ref(family)},"name":"{name}"}}}}}}'
        return f"{verb} chain {family} {self.table} {name}"

    def delete_chain(self, family: str, name: str) -> str:
        """Delete the (empty) regular chain ``name``."""
        if self.json:
            return f'{{"delete":{{"chain":{{{self._ref(family)},"name":"{name}"}}}}}}'
        return f"delete chain {family} {self.table} {name}"

    def delete_rule(self, family: str, chain: str, handle: int) -> str:
        """Delete the rule with kernel handle ``handle`` from one of k3snet's chains."""
        if self.json:
            return (f'{{"delete":{{"rule":{{{self._ref(family)},"chain":"{chain}",'
                    f'"handle":{handle}}}}}}}')
        return f"delete rule {family} {self.table} {chain} handle {handle}"

    def add_rules(self, family: str, obj: NetObject,
                  rules: tuple[NftRule, ...] | None = None) -> list[str]:
        """Append ``obj``'s kernel rules (:func:`~k3snet.render.nftables.nft_rules`, in
        order, with their tags; ``rules``: those, when the caller rendered them for a
        table of ``family`` already) to their chain, spelled for a table of ``family``:
        one command per rule."""
        inet = family == "inet"
        if rules is None:
            rules = nft_rules(obj, inet=inet)
        head = self._heads.get(family) or self._head(family)
        commands = []
        # Loops rather than comprehensions, and the command's head made once per family:
        # this runs once per object of a 10k-rule apply.
        if self.json:
            for rule, expr in zip(rules, nft_rules_json(obj, inet=inet)):  # noqa: B905 - same length
                commands.append(f'{head}{rule.chain}","comment":"{rule.comment}",'
                                f'"expr":{expr}}}}}}}')
        else:
            for rule in rules:
                commands.append(f'{head}{rule.chain} {rule.body} comment "{rule.comment}"')
        return commands

    def _head(self, family: str) -> str:
        """What every add-rule command for ``family`` starts with (up to the chain name)."""
        head = (f'{{"add":{{"rule":{{{self._ref(family)},"chain":"' if self.json
                else f"add rule {family} {self.table} ")
        self._heads[family] = head
        return head

    def transaction(self, commands: Sequence[str]) -> str:
        """The text of one batch holding ``commands`` in order (what libnftables is given)."""
        if self.json:
            return '{"nftables":[' + ",".join(commands) + "]}"
        return "\n".join(commands) + "\n"
