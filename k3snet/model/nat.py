"""Source NAT rules: masquerade and SNAT of pod traffic leaving the node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address
from typing import Any, ClassVar

import attrs

from k3snet.errors import ModelError
from k3snet.model._base import (
    NetObject,
    check_families,
    net_tuple,
    optional_interface,
    optional_network,
)
from k3snet.model.cidr import (
    Address,
    Network,
    aggregate,
    contains,
    overlaps,
    parse_address,
    parse_network,
    subtract,
)

__all__ = ["MasqueradeRule", "NatRule", "SnatRule"]


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


def _exclusions(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        raise ModelError(f"exclude must be a list of CIDRs, got the string {values!r}")
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

    def _covers(self, other: _NatBase) -> bool:
        """``other`` translates at least every packet ``self`` does."""
        if other.family != self.family or not contains(other.source, self.source):
            return False
        if other.out_interface is not None and other.out_interface != self.out_interface:
            return False
        theirs = other.natted_destinations()
        return all(any(contains(t, mine) for t in theirs) for mine in self.natted_destinations())

    def _describe(self, action: str) -> str:
        parts = [action, str(self.source), "->", str(self.destination or "any")]
        if self.exclude:
            parts += ["except", ",".join(map(str, self.exclude))]
        if self.out_interface:
            parts += ["oif", self.out_interface]
        if self.random_fully:
            parts.append("random-fully")
        return " ".join(parts)

    def _base_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "source": str(self.source),
            "destination": None if self.destination is None else str(self.destination),
            "exclude": [str(e) for e in self.exclude],
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

    to_address: Address = attrs.field(converter=_snat_address, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        family = self._check()
        if self.to_address.version != family:
            raise ModelError(
                f"snat {self.source}: to_address {self.to_address} is not IPv{family}"
            )
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**self._base_dict(), "to_address": str(self.to_address)}

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
