"""Forward-accept rules: let pod traffic through a FORWARD chain whose policy is DROP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from k3snet.model._base import NetObject, check_families, net_tuple, optional_interface
from k3snet.model.cidr import Network, contains, parse_network

__all__ = ["ForwardRule"]


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
            and other.in_interface in (None, self.in_interface)
            and other.out_interface in (None, self.out_interface)
        )

    def describe(self) -> str:
        """``forward accept SRC -> DST [iif IF] [oif IF] (+ replies)``."""
        parts = ["forward accept", str(self.source), "->", str(self.destination)]
        if self.in_interface:
            parts += ["iif", self.in_interface]
        if self.out_interface:
            parts += ["oif", self.out_interface]
        return " ".join([*parts, "(+ replies)"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "source": str(self.source),
            "destination": str(self.destination),
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
