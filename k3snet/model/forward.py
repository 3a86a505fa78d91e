"""Forward-accept rules, and the foreign rules that decide the same traffic otherwise.

A :class:`ForwardRule` lets pod traffic through a FORWARD chain whose policy is
DROP. A :class:`ForwardBlock` is a foreign rule (an admin's, another program's)
that drops, rejects or returns forwarded traffic where it is met before
k3snet's accept: a wanted forward rule it touches is a ``conflict``, never
overridden (docs/reliability.md, "An admin's rule is never overridden").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from k3snet.errors import ModelError
from k3snet.model._base import (
    NetObject,
    check_families,
    foreign_rule_text,
    interface_holds,
    interfaces_may_meet,
    ip_family,
    net_tuple,
    optional_interface,
    optional_network,
    unescaped,
)
from k3snet.model.cidr import Network, contains, network_text, overlaps, parse_network

__all__ = ["ForwardBlock", "ForwardRule"]


@attrs.frozen(eq=False)
class ForwardRule(NetObject):
    """Accept forwarded traffic from ``source`` to ``destination`` and its replies.

    Backends render two matches: new traffic ``source -> destination`` (optionally
    only from ``in_interface`` / to ``out_interface``) and established/related
    packets coming back ``destination -> source``.

    >>> ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0").describe()
    'forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)'
    """

    kind: ClassVar[str] = "forward"
    type_name: ClassVar[str] = "forward"
    rank: ClassVar[int] = 2

    source: Network = attrs.field(converter=parse_network)
    destination: Network = attrs.field(converter=parse_network)
    in_interface: str | None = attrs.field(default=None, converter=optional_interface, kw_only=True)
    out_interface: str | None = attrs.field(
        default=None, converter=optional_interface, kw_only=True
    )

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        check_families("forward", self.source, self.destination)
        key = ("forward", self.family, *net_tuple(self.source), *net_tuple(self.destination))
        self._seal(key, (self.in_interface or "", self.out_interface or ""))

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.source.version

    def met_by(self, other: NetObject) -> bool:
        """A foreign accept covering at least our source, destination and interfaces."""
        return (
            isinstance(other, ForwardRule)
            and contains(other.source, self.source)
            and contains(other.destination, self.destination)
            and interface_holds(other.in_interface, self.in_interface)
            and interface_holds(other.out_interface, self.out_interface)
        )

    def conflicts_with(self, other: NetObject) -> bool:
        """A foreign rule met before ours that decides some of our packets otherwise."""
        return isinstance(other, ForwardBlock) and other.decides(self)

    def conflict_reason(self, other: NetObject) -> str | None:
        """Why a :class:`ForwardBlock` wins, and that k3snet never moves above it. A drop
        or reject is final wherever it runs: one in another table's base chain of a later
        priority drops what k3snet's accept passed, so those do not say "before"."""
        if not isinstance(other, ForwardBlock):
            return None
        if other.verdict == "untrack":
            return ("that rule leaves some of this traffic untracked: a reply is then no "
                    "established connection's, k3snet's accept of replies does not take it, "
                    "and the forward path's default (a policy drop, a drop of every packet) "
                    "drops it; k3snet does not place its rules above it")
        if other.verdict in ("drop", "reject") and _kube_router_pod(other):
            pods = f" (here {network_text(other.source)})" if other.source is not None else ""
            return ("that rule is kube-router's NetworkPolicy enforcement (K3s' network "
                    "policy controller, a KUBE-POD-FW- chain): it rejects the packets of "
                    f"the pods a NetworkPolicy selects{pods} that none of their policies "
                    "allows (what one allows, kube-router marks 0x10000 first); the other "
                    "pods' packets never reach it. k3snet's accept cannot let them through, "
                    "nor should it: to let those pods reach this destination, allow it in "
                    "their egress NetworkPolicy (an ipBlock of the destination)")
        if other.verdict in ("drop", "reject"):
            return (f"that rule {other.verdict}s some of this traffic and k3snet's accept "
                    "cannot let it through (a drop is final in whichever chain of the hook "
                    "it runs); k3snet does not place its rules above it")
        return (f"that rule {other.verdict}s some of this traffic before k3snet's accept "
                "is reached; k3snet does not place its rules above it")

    def describe(self) -> str:
        """``forward accept SRC -> DST [iif IF] [oif IF] (+ replies)``."""
        parts = ["forward accept", network_text(self.source), "->", network_text(self.destination)]
        if self.in_interface:
            parts += ["iif", self.in_interface]
        if self.out_interface:
            parts += ["oif", self.out_interface]
        return " ".join([*parts, "(+ replies)"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "source": network_text(self.source),
            "destination": network_text(self.destination),
            "in_interface": self.in_interface,
            "out_interface": self.out_interface,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForwardRule:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["source"],
            data["destination"],
            in_interface=data.get("in_interface"),
            out_interface=data.get("out_interface"),
        )


def _kube_router_pod(block: ForwardBlock) -> bool:
    """Whether ``block`` is a rule of kube-router's per-pod firewall chain (``-A
    KUBE-POD-FW-... -j REJECT``, or listed through nft in chain ``KUBE-POD-FW-...``)."""
    return (block.rule.startswith("-A KUBE-POD-FW-")
            or block.where.rsplit(" ", 1)[-1].startswith("KUBE-POD-FW-"))


_VERDICTS = ("drop", "reject", "return", "queue", "untrack")
def _verdict(value: object) -> str:
    if value not in _VERDICTS:
        raise ModelError(f"a foreign rule's verdict is one of {', '.join(_VERDICTS)}, "
                         f"not {value!r}")
    return str(value)


def _accepted(values: Any) -> tuple[ForwardRule, ...]:
    found = tuple(values)
    if not all(isinstance(v, ForwardRule) for v in found):
        raise ModelError("a foreign rule's accepted traffic is ForwardRule objects")
    return found


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"replies_accepted must be true or false, got {value!r}")
    return value


def _one_way_in(rules: tuple[ForwardRule, ...], source: Network, destination: Network,
                iif: str | None, oif: str | None) -> bool:
    """Whether one of ``rules``, read one way (source to destination), takes every
    packet from ``source`` to ``destination`` through those interfaces."""
    return any(contains(r.source, source) and contains(r.destination, destination)
               and interface_holds(r.in_interface, iif) and interface_holds(r.out_interface, oif)
               for r in rules)


@attrs.frozen(eq=False)
class ForwardBlock(NetObject):
    """A foreign rule that drops, rejects, returns or queues forwarded packets before our
    accept, or leaves them untracked (``untrack``: their replies are then no established
    connection's, and k3snet's accept of replies never takes them).

    Only ever *observed* (foreign): ``rule`` is the rule's text as its tool lists
    it, ``where`` where it sits (``iptables IPv4 filter FORWARD``, ``nftables inet
    fw forward``). ``source`` / ``destination`` / interfaces are what it matches
    (``None``: any; a negated or unmodelled match counts as any, so a doubt is a
    conflict rather than an override). A wanted :class:`ForwardRule` whose packets
    (either way) it may match conflicts with it, unless a rule met before it on its
    way takes those packets first: ``accepted`` (an accept's traffic, each a
    :class:`ForwardRule` read one way, without replies) and ``replies_accepted``
    (a ``ct state established,related accept`` or ``ct direction reply accept``: every
    reply). An accept ends the
    base chain for what it takes, so the rule never sees it.

    >>> block = ForwardBlock(4, "drop", "-s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP",
    ...                      "iptables IPv4 filter FORWARD", source="10.42.0.0/16",
    ...                      destination="192.168.2.0/24")
    >>> block.decides(ForwardRule("10.42.0.0/16", "192.168.0.0/16"))
    True
    >>> block.describe()
    'drop by iptables IPv4 filter FORWARD: -s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP'
    """

    kind: ClassVar[str] = "forward"
    type_name: ClassVar[str] = "forward-block"
    rank: ClassVar[int] = 2
    written: ClassVar[bool] = False

    ip_family: int = attrs.field(converter=ip_family)
    verdict: str = attrs.field(converter=_verdict)
    rule: str = attrs.field(converter=foreign_rule_text)
    where: str = attrs.field(converter=foreign_rule_text)
    source: Network | None = attrs.field(default=None, converter=optional_network, kw_only=True)
    destination: Network | None = attrs.field(default=None, converter=optional_network,
                                              kw_only=True)
    in_interface: str | None = attrs.field(default=None, converter=optional_interface, kw_only=True)
    out_interface: str | None = attrs.field(
        default=None, converter=optional_interface, kw_only=True
    )
    accepted: tuple[ForwardRule, ...] = attrs.field(default=(), converter=_accepted,
                                                    kw_only=True)
    replies_accepted: bool = attrs.field(default=False, converter=_flag, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for rule in self.accepted:
            if rule.family != self.ip_family:
                raise ModelError(f"foreign rule {self.rule!r}: accepted traffic "
                                 f"{rule.describe()} is not IPv{self.ip_family}")
        for net in (self.source, self.destination):
            if net is not None and net.version != self.ip_family:
                raise ModelError(f"foreign rule {self.rule!r}: {net} is not IPv{self.ip_family}")
        key = ("forward-block", self.ip_family, self.where, self.rule)
        self._seal(key, (self.verdict, *net_tuple(self.source), *net_tuple(self.destination),
                         self.in_interface or "", self.out_interface or "",
                         tuple(r.sort_key for r in self.accepted), self.replies_accepted))

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.ip_family

    @property
    def final(self) -> bool:
        """True for a drop or reject: final wherever it runs (an accept in another base
        chain of the hook, or in another program's tables, does not let the packet
        through it, firewalld#527), so no foreign accept meets what it decides. The
        other verdicts act relative to the rules around them."""
        return self.verdict in ("drop", "reject")

    def decides(self, rule: ForwardRule) -> bool:
        """True when this rule may match packets of ``rule``, new ones or replies (and
        a rule met before it does not take them all first). An ``untrack`` one that may
        match either way decides both (the other way is then a new connection's, or
        none's), unless ``accepted`` takes both ways by what they are: an accept of
        replies by conntrack (``replies_accepted``) takes no untracked flow."""
        if rule.family != self.ip_family:
            return False
        new = (rule.source, rule.destination, rule.in_interface, rule.out_interface)
        replies = (rule.destination, rule.source, rule.out_interface, rule.in_interface)
        if self.verdict == "untrack":
            # Untracked one way, the other way is a new connection's: no accept of
            # established connections takes either, only accepts of both ways' addresses.
            return ((self._may_match(*new) or self._may_match(*replies))
                    and not (_one_way_in(self.accepted, *new)
                             and _one_way_in(self.accepted, *replies)))
        if self._may_match(*new) and not _one_way_in(self.accepted, *new):
            return True
        return (not self.replies_accepted and self._may_match(*replies)
                and not _one_way_in(self.accepted, *replies))

    def _may_match(self, source: Network, destination: Network, iif: str | None,
                   oif: str | None) -> bool:
        return (
            (self.source is None or overlaps(self.source, source))
            and (self.destination is None or overlaps(self.destination, destination))
            and interfaces_may_meet(self.in_interface, iif)
            and interfaces_may_meet(self.out_interface, oif)
        )

    def describe(self) -> str:
        """``VERDICT by WHERE: RULE``."""
        return f"{self.verdict} by {self.where}: {self.rule}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "family": self.ip_family,
            "verdict": self.verdict,
            "rule": self.rule,
            "where": self.where,
            "source": None if self.source is None else network_text(self.source),
            "destination": None if self.destination is None else network_text(self.destination),
            "in_interface": self.in_interface,
            "out_interface": self.out_interface,
            # Only when set: the form of a block without them is as it was.
            **({"accepted": [r.to_dict() for r in self.accepted]} if self.accepted else {}),
            **({"replies_accepted": True} if self.replies_accepted else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForwardBlock:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["family"], data["verdict"], unescaped(data["rule"]), unescaped(data["where"]),
            source=data.get("source"), destination=data.get("destination"),
            in_interface=data.get("in_interface"), out_interface=data.get("out_interface"),
            accepted=[ForwardRule.from_dict(r) for r in data.get("accepted", ())],
            replies_accepted=data.get("replies_accepted", False),
        )
