"""What the nftables backend knows of its table, stamped with the ruleset generation id.

Deleting a rule needs its kernel handle. ``observe`` learns the handles of the
rules it lists; for the rules an apply adds, the backend learns them from the
marker chain (see :mod:`.backend`) instead of listing anything. What was
observed and applied is kept, stamped with the ruleset generation id
(``NFT_MSG_GETGEN``: every committed nftables transaction in the namespace bumps
it, iptables-nft's included), and read again only when the id moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from k3snet.model import Drift, NetObject, interfaces_may_meet
from k3snet.model.state import State

if TYPE_CHECKING:
    from k3snet.backends.nftables.text import Lines

__all__ = ["Cache", "Diff", "Key", "Repair", "Table", "nat_overlap", "rule_count"]

Key = tuple[Any, ...]
"""An object's identity key (:attr:`~k3snet.model.NetObject.key`)."""


@dataclass
class Table:
    """What k3snet knows of one of its tables."""

    chains: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> chain JSON
    marker: bool = False


@dataclass(frozen=True)
class Repair:
    """What the backend does when a plan deletes one :class:`~k3snet.model.Drift` it found.

    In the table of nft ``family``: delete the rules ``rules`` (chain, handle);
    declare base chain ``chain`` again with k3snet's hook, priority and policy;
    ``rebuild`` the table (delete and re-create it with every object, in the same
    transaction: the one removal that works for a chain of any name and for a base
    chain with another hook); re-add object ``retag``'s rules with their tag.
    """

    family: str
    rules: tuple[tuple[str, int], ...] = ()
    chain: str | None = None
    rebuild: bool = False
    retag: Key | None = None


@dataclass
class Cache:
    """k3snet's table(s) as of ruleset generation ``genid``.

    ``handles[key]`` holds the kernel handle of each rule of the object (in
    :func:`nft_rules` order), ``None`` when not known (then the next change
    that must delete it re-reads the table first). ``drift`` maps each
    :class:`~k3snet.model.Drift` found (by key) to it and its repair.
    """

    genid: int
    objects: dict[Key, NetObject] = field(default_factory=dict)
    handles: dict[Key, list[int | None]] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)  # nft family -> table
    drift: dict[Key, tuple[Drift, Repair]] = field(default_factory=dict)
    foreign: frozenset[NetObject] | None = None
    # the tables processes owned when ``foreign`` was read: the kernel deletes one without
    # moving the generation id, so ``foreign`` holds only while they are all still there
    owners: frozenset[tuple[str, str, int]] = frozenset()
    # the devices other tables' chains are hooked on that the node did not have when
    # ``foreign`` was read (read as dropping nothing): one appearing moves no generation
    # id either, so ``foreign`` holds only while they are all still absent
    absent: tuple[str, ...] = ()
    # and those it had: the kernel keeps a chain hooked on the name of a device gone,
    # which drops nothing then, and moves no generation id either
    present: tuple[str, ...] = ()
    state: State | None = None
    nat_index: dict[tuple[int, int, int], set[Key]] = field(default_factory=dict)
    lines: Lines = field(default_factory=dict)  # what the text reader read each rule line as
    # key -> (chain, text) of the first rule, where known without a listing (an object read
    # from a kept file, or added by an apply): what the kept read keeps (.kept)
    bodies: dict[Key, tuple[str, str]] = field(default_factory=dict)

    def put(self, key: Key, obj: NetObject) -> None:
        """Record ``obj`` (owned) under ``key``."""
        if key not in self.objects and key[0] == "nat":
            bucket = self.nat_index.get(index := (key[1], key[2], key[3]))
            if bucket is None:
                self.nat_index[index] = {key}  # not setdefault: no set made for nothing
            else:
                bucket.add(key)
        self.objects[key] = obj

    def drop(self, key: Key) -> None:
        """Forget the object under ``key`` and its handles."""
        if self.objects.pop(key, None) is not None and key[0] == "nat":
            bucket = self.nat_index[(key[1], key[2], key[3])]
            bucket.discard(key)
            if not bucket:
                del self.nat_index[(key[1], key[2], key[3])]
        self.handles.pop(key, None)
        self.bodies.pop(key, None)

    def found(self, drift: Drift, repair: Repair) -> None:
        """Record a finding (a second one with the same key is the same finding)."""
        self.drift.setdefault(drift.key, (drift, repair))

    def owned(self) -> list[NetObject]:
        """The owned objects observe reports: k3snet's rules, then the drift found."""
        return [*self.objects.values(), *(d for d, _ in self.drift.values())]


def nat_overlap(a: Key, b: Key) -> bool:
    """Whether NAT rules keyed ``a`` and ``b`` (sources overlapping) can match one packet.

    Exclusions are ignored: a pair that only seems to overlap just costs a re-add.
    """
    a_dst, a_len, b_dst, b_len = a[4], a[5], b[4], b[5]
    if a_len >= 0 and b_len >= 0:
        bits = 32 if a[1] == 4 else 128
        shorter = min(a_len, b_len)
        mask = ((1 << bits) - 1) ^ ((1 << (bits - shorter)) - 1)
        if a_dst & mask != b_dst & mask:
            return False
    # A key holds "" for any interface; a wildcard (eth+) and a name it holds overlap.
    return interfaces_may_meet(a[6] or None, b[6] or None)


@dataclass
class Diff:
    """What a plan does to k3snet's rules: the objects after it, and the rules to touch."""

    objects: dict[Key, NetObject]
    removed: list[Key]  # present before, gone or different after
    added: list[Key]  # new or different after
    moved: list[Key]  # unchanged, but re-added after an added rule that must precede it
    change_of: dict[Key, int]  # key -> index of the first change naming it
    repairs: list[tuple[int, Drift, Repair]] = field(default_factory=list)  # (change, ...)


def rule_count(obj: NetObject) -> int:
    """How many kernel rules implement ``obj`` (a forward rule has a reply half)."""
    return 2 if obj.kind == "forward" else 1
