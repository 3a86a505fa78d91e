"""Source NAT rules: masquerade and SNAT of pod traffic leaving the node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address
from typing import Any, ClassVar, Final

import attrs

from k3snet.errors import ModelError
from k3snet.model._base import (
    BRIEF_ITEMS,
    NetObject,
    check_families,
    foreign_rule_text,
    interfaces_may_meet,
    ip_family,
    net_tuple,
    optional_interface,
    optional_network,
    unescaped,
)
from k3snet.model.cidr import (
    Address,
    Network,
    address_text,
    aggregate,
    contains,
    network_text,
    not_unicast,
    overlaps,
    parse_address,
    parse_network,
    subtract,
)

__all__ = ["MasqueradeRule", "NatBlock", "NatRule", "SnatRule", "snat_address_problem"]


def _destination(value: str | Network | None) -> Network | None:
    """A ``/0`` destination is "any": normalised to ``None`` so both spellings are one key."""
    net = optional_network(value)
    return None if net is not None and net.prefixlen == 0 else net


def _snat_address(value: str | Address) -> Address:
    """A node address without zone id: nft and iptables refuse ``fe80::1%eth0`` as a
    SNAT address (the text after ``%`` would be written into both)."""
    address = parse_address(value)
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        raise ModelError(f"SNAT address {str(address)[:60]!r} has a zone id ('%...'); "
                         "give the address alone")
    return address


_LINK_LOCAL: Final = {4: parse_network("169.254.0.0/16"), 6: parse_network("fe80::/10")}


def snat_address_problem(address: Address, destination: Network | None = None) -> str | None:
    """Why ``address`` cannot be the source a SNAT rule to ``destination`` (``None``:
    any) writes (``None``: it can).

    The kernel takes any address (nft ``snat to 0.0.0.0``, iptables ``--to-source
    224.0.0.1``), and every translated packet then leaves with a source no reply
    can come back to: egress silently lost. A node's unicast address is needed.
    A link-local one (169.254.0.0/16, fe80::/10) too is taken, and lost the same way
    beyond the link: routers do not forward packets from it (RFC 3927, RFC 4291;
    Linux answers an IPv6 one with "not a neighbour"), so it is only for link-local
    destinations.
    """
    kind = not_unicast(address)
    if kind is not None:
        return (f"{address_text(address)} is {kind}; SNAT needs a unicast address of the "
                "node (replies come back to it)")
    link = _LINK_LOCAL[address.version]
    if contains(link, address) and (destination is None or not contains(link, destination)):
        return (f"{address_text(address)} is a link-local address: routers do not forward "
                "packets from it, so no reply from beyond the link comes back; SNAT needs a "
                f"routable address of the node (a link-local one only for destinations in "
                f"{network_text(link)})")
    return None


def _snat_to(value: str | Address) -> Address:
    address = _snat_address(value)
    kind = not_unicast(address)  # the rest of snat_address_problem needs the destination
    if kind is not None:
        raise ModelError(f"SNAT address {snat_address_problem(address)}")
    return address


def _exclusions(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        raise ModelError(f"exclude must be a list of CIDRs, got the string {values!r}")
    if not isinstance(values, Iterable) or isinstance(values, bytes | Mapping):
        # None or a number failed inside the aggregation; bytes iterate as numbers
        # and a mapping as its keys.
        raise ModelError(f"exclude must be a list of CIDRs, got {type(values).__name__}")
    if isinstance(values, tuple | list) and not values:  # most rules: nothing to aggregate
        return ()
    return aggregate(parse_network(v) for v in values)


@attrs.frozen(eq=False)
class _NatBase(NetObject):
    """Fields shared by masquerade and SNAT rules.

    Traffic from ``source`` to ``destination`` (any destination when ``None``),
    minus the ``exclude`` prefixes (ip-masq-agent's ``nonMasqueradeCIDRs``),
    leaving through ``out_interface`` (any when ``None``) is source-NATed.
    Exclusions are kept aggregated, so equal sets compare equal.
    """

    kind: ClassVar[str] = "nat"
    rank: ClassVar[int] = 3

    source: Network = attrs.field(converter=parse_network)
    destination: Network | None = attrs.field(
        default=None, converter=_destination, kw_only=True
    )
    exclude: tuple[Network, ...] = attrs.field(default=(), converter=_exclusions, kw_only=True)
    out_interface: str | None = attrs.field(
        default=None, converter=optional_interface, kw_only=True
    )
    random_fully: bool = attrs.field(default=False, kw_only=True)

    def _check(self) -> int:
        family = check_families(self.type_name, self.source, self.destination, *self.exclude)
        if not isinstance(self.random_fully, bool):
            raise ModelError(f"random_fully must be true or false, got {self.random_fully!r}")
        for excluded in self.exclude:
            if self.destination is not None and not overlaps(self.destination, excluded):
                raise ModelError(
                    f"{self.type_name} {self.source}: exclusion {excluded} lies outside "
                    f"destination {self.destination}"
                )
        if self.destination is None and any(e.prefixlen == 0 for e in self.exclude):
            # Exclusions are aggregated: two halves that make up every address are /0 here.
            raise ModelError(
                f"{self.type_name} {self.source}: exclusions cover every destination; "
                "the rule would never match"
            )
        if self.destination is not None and any(
            contains(e, self.destination) for e in self.exclude
        ):
            raise ModelError(
                f"{self.type_name} {self.source}: exclusions cover the whole destination "
                f"{self.destination}; the rule would never match"
            )
        return family

    def _nat_key(self) -> tuple[Any, ...]:
        return ("nat", self.source.version, *net_tuple(self.source), *net_tuple(self.destination),
                self.out_interface or "")

    def _nat_content(self) -> tuple[Any, ...]:
        return (tuple(net_tuple(e) for e in self.exclude), self.random_fully)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.source.version

    def natted_destinations(self) -> tuple[Network, ...]:
        """The destination prefixes this rule translates (destination minus exclusions)."""
        whole = self.destination
        if whole is None:
            whole = parse_network("0.0.0.0/0" if self.family == 4 else "::/0")
        return subtract(whole, self.exclude)

    def conflicts_with(self, other: NetObject) -> bool:
        """A foreign NAT rule met before ours that translates some of our packets otherwise."""
        return isinstance(other, NatBlock) and other.decides(self)

    def conflict_reason(self, other: NetObject) -> str | None:
        """Why a :class:`NatBlock` wins: the first NAT rule a connection meets decides."""
        if isinstance(other, NatBlock):
            if other.action == "exempt":
                return ("that rule lets some of this traffic leave untranslated before "
                        "k3snet's rule is reached; k3snet does not place its rules above it")
            return ("that rule translates some of this traffic before k3snet's rule is "
                    "reached (the first NAT rule met decides); k3snet does not place its "
                    "rules above it")
        return None

    def _covers(self, other: _NatBase) -> bool:
        """``other`` translates at least every packet ``self`` does."""
        if other.family != self.family or not contains(other.source, self.source):
            return False
        if other.out_interface is not None and other.out_interface != self.out_interface:
            return False
        theirs = other.natted_destinations()
        return all(any(contains(t, mine) for t in theirs) for mine in self.natted_destinations())

    def _describe(self, action: str, *, brief: bool = False) -> str:
        destination = "any" if self.destination is None else network_text(self.destination)
        parts = [action, network_text(self.source), "->", destination]
        if brief and len(self.exclude) > BRIEF_ITEMS:
            parts += ["except", ",".join(map(network_text, self.exclude[:BRIEF_ITEMS]))
                      + f",... ({len(self.exclude)} prefixes)"]
        elif self.exclude:
            parts += ["except", ",".join(map(network_text, self.exclude))]
        if self.out_interface:
            parts += ["oif", self.out_interface]
        if self.random_fully:
            parts.append("random-fully")
        return " ".join(parts)

    def _base_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "source": network_text(self.source),
            "destination": None if self.destination is None else network_text(self.destination),
            "exclude": [network_text(e) for e in self.exclude],
            "out_interface": self.out_interface,
            "random_fully": self.random_fully,
        }


@attrs.frozen(eq=False)
class MasqueradeRule(_NatBase):
    """Masquerade: rewrite the source to the out interface's address.

    >>> rule = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0")
    >>> rule.describe()
    'masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0'
    """

    type_name: ClassVar[str] = "masquerade"

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check()
        self._seal(self._nat_key(), self._nat_content())

    def met_by(self, other: NetObject) -> bool:
        """A foreign masquerade already translating all our traffic."""
        return isinstance(other, MasqueradeRule) and self._covers(other)

    def describe(self) -> str:
        """``masquerade SRC -> DST [except ...] [oif IF] [random-fully]``."""
        return self._describe("masquerade")

    def brief(self) -> str:
        """:meth:`describe`, the exclusions past the first :data:`BRIEF_ITEMS` counted.

        >>> rule = MasqueradeRule("10.42.0.0/16", exclude=[f"10.0.{i}.0/25" for i in range(60)])
        >>> rule.brief()[31:]
        'except 10.0.0.0/25,10.0.1.0/25,10.0.2.0/25,... (60 prefixes)'
        """
        return self._describe("masquerade", brief=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return self._base_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MasqueradeRule:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["source"],
            destination=data.get("destination"),
            exclude=data.get("exclude", ()),
            out_interface=data.get("out_interface"),
            random_fully=data.get("random_fully", False),
        )


@attrs.frozen(eq=False)
class SnatRule(_NatBase):
    """SNAT: rewrite the source to a fixed ``to_address`` (a node address that never changes).

    >>> SnatRule("10.42.0.0/16", to_address="192.168.1.5").describe()
    'snat 10.42.0.0/16 -> any to 192.168.1.5'
    """

    type_name: ClassVar[str] = "snat"

    to_address: Address = attrs.field(converter=_snat_to, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        family = self._check()
        if self.to_address.version != family:
            raise ModelError(
                f"snat {self.source}: to_address {self.to_address} is not IPv{family}"
            )
        problem = snat_address_problem(self.to_address, self.destination)
        if problem is not None:
            raise ModelError(f"snat {self.source}: SNAT address {problem}")
        self._seal(self._nat_key(), (*self._nat_content(), int(self.to_address)))

    def met_by(self, other: NetObject) -> bool:
        """A foreign SNAT to the same address already translating all our traffic."""
        return (
            isinstance(other, SnatRule)
            and other.to_address == self.to_address
            and self._covers(other)
        )

    def describe(self) -> str:
        """``snat SRC -> DST [except ...] [oif IF] to ADDR``."""
        return f"{self._describe('snat')} to {self.to_address}"

    def brief(self) -> str:
        """:meth:`describe`, the exclusions past the first :data:`BRIEF_ITEMS` counted."""
        return f"{self._describe('snat', brief=True)} to {self.to_address}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**self._base_dict(), "to_address": address_text(self.to_address)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SnatRule:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["source"],
            destination=data.get("destination"),
            exclude=data.get("exclude", ()),
            out_interface=data.get("out_interface"),
            random_fully=data.get("random_fully", False),
            to_address=data["to_address"],
        )


NatRule = MasqueradeRule | SnatRule
"""Either NAT rule; both share one key space (a masquerade can be replaced by a SNAT)."""


_ACTIONS = ("masquerade", "snat", "exempt")


def _action(value: object) -> str:
    if value not in _ACTIONS:
        raise ModelError(f"a foreign NAT rule's action is one of {', '.join(_ACTIONS)}, "
                         f"not {value!r}")
    return str(value)


def _optional_address(value: str | Address | None) -> Address | None:
    return None if value is None else _snat_address(value)


@attrs.frozen(eq=False)
class NatBlock(NetObject):
    """A foreign NAT rule met before k3snet's, translating some of the same traffic otherwise.

    Only ever *observed* (foreign): ``rule`` is the rule's text as its tool lists
    it, ``where`` where it sits (``iptables IPv4 nat POSTROUTING``). ``action`` is
    ``masquerade``, ``snat`` (to ``to_address``; ``None``: an address or range
    k3snet does not model, never the same as ours) or ``exempt`` (a ``RETURN`` or
    ``ACCEPT`` that ends the NAT table for the packets it matches, so they leave
    untranslated and k3snet's jump is never met); ``source`` / ``destination`` /
    ``out_interface`` are what it matches (``None``: any; a negated match counts
    as any, so a doubt is a conflict rather than an override). The first NAT rule
    a connection meets decides its translation: a wanted NAT rule some of whose
    packets this rule may match, and translates otherwise, conflicts with it.

    >>> block = NatBlock(4, "snat", "-s 10.42.0.0/16 -j SNAT --to-source 192.0.2.9",
    ...                  "iptables IPv4 nat POSTROUTING", source="10.42.0.0/16",
    ...                  to_address="192.0.2.9")
    >>> block.decides(MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"))
    True
    >>> block.decides(SnatRule("10.42.0.0/16", to_address="192.0.2.9"))
    False
    >>> block.describe().split(":")[0]
    'snat to 192.0.2.9 by iptables IPv4 nat POSTROUTING'
    """

    kind: ClassVar[str] = "nat"
    type_name: ClassVar[str] = "nat-block"
    rank: ClassVar[int] = 3
    written: ClassVar[bool] = False

    ip_family: int = attrs.field(converter=ip_family)
    action: str = attrs.field(converter=_action)
    rule: str = attrs.field(converter=foreign_rule_text)
    where: str = attrs.field(converter=foreign_rule_text)
    source: Network | None = attrs.field(default=None, converter=optional_network, kw_only=True)
    destination: Network | None = attrs.field(default=None, converter=optional_network,
                                              kw_only=True)
    out_interface: str | None = attrs.field(
        default=None, converter=optional_interface, kw_only=True
    )
    to_address: Address | None = attrs.field(default=None, converter=_optional_address,
                                             kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for value in (self.source, self.destination, self.to_address):
            if value is not None and value.version != self.ip_family:
                raise ModelError(f"foreign rule {self.rule!r}: {value} is not IPv{self.ip_family}")
        if self.action != "snat" and self.to_address is not None:
            raise ModelError(f"foreign rule {self.rule!r}: only an snat has a to_address")
        key = ("nat-block", self.ip_family, self.where, self.rule)
        self._seal(key, (self.action, *net_tuple(self.source), *net_tuple(self.destination),
                         self.out_interface or "",
                         int(self.to_address) if self.to_address is not None else -1))

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.ip_family

    def decides(self, rule: NetObject) -> bool:
        """True when this rule may match packets of ``rule`` and translates them otherwise."""
        if not isinstance(rule, MasqueradeRule | SnatRule) or rule.family != self.ip_family:
            return False
        if self.action == "exempt":
            same = False  # untranslated is never what a NAT rule of k3snet wants
        elif self.action == "masquerade":
            same = isinstance(rule, MasqueradeRule)
        else:
            same = isinstance(rule, SnatRule) and rule.to_address == self.to_address
        return (
            not same
            and (self.source is None or overlaps(self.source, rule.source))
            and (self.destination is None
                 or any(overlaps(self.destination, d) for d in rule.natted_destinations()))
            and interfaces_may_meet(self.out_interface, rule.out_interface)
        )

    def describe(self) -> str:
        """``ACTION by WHERE: RULE``."""
        action = {"exempt": "no NAT"}.get(self.action, self.action)
        if self.to_address is not None:
            action = f"snat to {self.to_address}"
        return f"{action} by {self.where}: {self.rule}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "family": self.ip_family,
            "action": self.action,
            "rule": self.rule,
            "where": self.where,
            "source": None if self.source is None else network_text(self.source),
            "destination": None if self.destination is None else network_text(self.destination),
            "out_interface": self.out_interface,
            "to_address": None if self.to_address is None else address_text(self.to_address),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NatBlock:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["family"], data["action"], unescaped(data["rule"]), unescaped(data["where"]),
            source=data.get("source"), destination=data.get("destination"),
            out_interface=data.get("out_interface"), to_address=data.get("to_address"),
        )
