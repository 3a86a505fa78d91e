"""Routes: what ``ip route`` shows, as values."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs

from k3snet._logline import shell_word
from k3snet.errors import ModelError
from k3snet.model._base import (
    IFNAMSIZ,
    NetObject,
    check_families,
    one_line,
    optional_interface,
)
from k3snet.model.cidr import (
    Address,
    Network,
    address_text,
    network_text,
    parse_address,
    parse_network,
)

__all__ = ["K3SNET_ROUTE_PROTOCOL", "MAIN_TABLE", "Route", "RouteBlock", "RouteScope",
           "next_hop_problem", "parse_gateway", "protocol_name"]

K3SNET_ROUTE_PROTOCOL = 211
"""The route protocol number k3snet marks its routes with (unused in ``rt_protos``;
Calico uses 80, bird 12, static 4, boot 3, kernel 2)."""

MAIN_TABLE = 254
"""The kernel's main routing table (``ip route`` without ``table``), a route's default."""
_TABLE_NAMES = {253: "default", 254: "main", 255: "local"}
# iproute2's rt_protos names (and k3snet's own): routes print and serialise by name.
_PROTOCOL_NAMES = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static",
                   8: "gated", 9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted",
                   14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived",
                   42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip",
                   192: "eigrp", K3SNET_ROUTE_PROTOCOL: "k3snet"}
_PROTOCOL_NUMBERS = {name: number for number, name in _PROTOCOL_NAMES.items()}
# The kernel stores IPv6 routes added with metric 0 at IP6_RT_PRIO_USER.
_IPV6_DEFAULT_METRIC = 1024

RouteScope = Literal["universe", "link", "host"]
_SCOPES = ("universe", "link", "host")


def _table(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**32:
        raise ModelError(f"route table must be an integer 1..4294967295, got {value!r}")
    if value == 255:
        raise ModelError("route table 255 (local) is the kernel's; k3snet does not manage it")
    return value


def _u32(name: str) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise ModelError(f"route {name} must be an integer 0..4294967295, got {value!r}")
        return value

    return check


_metric = _u32("metric")


def _protocol(value: int | str) -> int:
    if isinstance(value, str):
        number = _PROTOCOL_NUMBERS.get(value)
        if number is None:
            raise ModelError(f"unknown route protocol name {value[:40]!r}; known: "
                             f"{', '.join(sorted(_PROTOCOL_NUMBERS))} (or a number 0..255)")
        return number
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ModelError(f"route protocol must be 0..255 or a name, got {value!r}")
    return value


def parse_gateway(value: str | Address) -> Address:
    """A route's next hop: an address, but not the unspecified one (``0.0.0.0``, ``::``).

    The kernel reads a zero gateway as none: it stores a route through the device
    without a next hop, which never reads back as the route written (a replace on
    every plan, forever).
    """
    address = parse_address(value)
    if address.is_unspecified:
        raise ModelError(f"gateway {address_text(address)} is the unspecified address, which "
                         "the kernel reads as no gateway; leave the gateway out (a route "
                         "through the device) or give the next hop's address")
    return address


def next_hop_problem(gateway: Address, device: str | None) -> str | None:
    """Why the kernel refuses a route via ``gateway`` through ``device`` whatever the node
    (``None``: it may take it): a link-local IPv6 next hop is on every link, so the
    kernel needs the device ("Egress device not specified"); an IPv4-mapped IPv6 one
    (``::ffff:192.0.2.1``) is never a next hop ("Invalid gateway address")."""
    if isinstance(gateway, ipaddress.IPv6Address) and gateway.ipv4_mapped is not None:
        return (f"gateway {address_text(gateway)} is an IPv4-mapped address, which the kernel "
                "refuses as a next hop; an IPv6 route needs an IPv6 gateway")
    if (device is not None and isinstance(gateway, ipaddress.IPv6Address)
            and gateway.scope_id is not None and gateway.scope_id != device):
        return (f"gateway {address_text(gateway)} names interface {gateway.scope_id}, but the "
                f"device is {device}; give the link once")
    if (device is None and isinstance(gateway, ipaddress.IPv6Address) and gateway.is_link_local
            and gateway.scope_id is None):
        shown = address_text(gateway)
        return (f"link-local gateway {shown} needs a device (the kernel cannot tell which "
                f"link it is on); give the device, or the gateway as {shown}%DEVICE")
    return None


def _optional_gateway(value: str | Address | None) -> Address | None:
    return None if value is None else parse_gateway(value)


def protocol_name(number: int) -> str | int:
    """The rt_protos name of a route protocol number (the number if it has none)."""
    return _PROTOCOL_NAMES.get(number, number)


@attrs.frozen(eq=False)
class Route(NetObject):
    """One route: ``destination [via gateway] [dev device] table T metric M``.

    ``metric=None`` and ``scope=None`` mean the kernel's defaults and are
    normalised at construction (metric 0 for IPv4, 1024 for IPv6; scope ``link``
    for a route without gateway, else ``universe``), so a route read back from
    the kernel equals the one written. An IPv4 route via a gateway is never of scope
    ``host`` nor ``link``: the kernel refuses it, and so does the model.

    >>> Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0").describe()
    'route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main metric 0 proto k3snet'
    >>> Route("192.168.2.0/24", gateway="192.168.1.1", protocol="static").protocol
    4
    """

    kind: ClassVar[str] = "route"
    type_name: ClassVar[str] = "route"
    rank: ClassVar[int] = 1

    destination: Network = attrs.field(converter=parse_network)
    gateway: Address | None = attrs.field(default=None, converter=_optional_gateway,
                                          kw_only=True)
    device: str | None = attrs.field(default=None, converter=optional_interface, kw_only=True)
    table: int = attrs.field(default=MAIN_TABLE, converter=_table, kw_only=True)
    metric: int | None = attrs.field(default=None, kw_only=True)
    scope: RouteScope | None = attrs.field(default=None, kw_only=True)
    protocol: int = attrs.field(default=K3SNET_ROUTE_PROTOCOL, converter=_protocol, kw_only=True)
    """The route protocol number; a name (``"static"``, ``"k3snet"``) is accepted too."""

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Locals, not attributes: this runs for every route read from the kernel.
        dst, gateway = self.destination, self.gateway
        family = check_families("route", dst, gateway)
        if isinstance(gateway, ipaddress.IPv6Address):
            self._move_zone_to_device()
            gateway = self.gateway
        if gateway is None and self.device is None:
            raise ModelError(f"route {dst} needs a gateway, a device, or both")
        if gateway is not None:
            problem = next_hop_problem(gateway, self.device)
            if problem is not None:
                raise ModelError(f"route {dst}: {problem}")
        v6 = family == 6
        metric = self.metric
        if metric is None or (v6 and metric == 0):
            metric = _IPV6_DEFAULT_METRIC if v6 else 0
        object.__setattr__(self, "metric", _metric(metric))
        scope = self.scope
        if scope is not None and scope not in _SCOPES:
            # Checked for IPv6 too, although dropped there: a wrong value is a mistake.
            raise ModelError(f"route scope must be one of {', '.join(_SCOPES)}, "
                             f"got {str(scope)[:40]!r}")
        if v6:
            scope = "universe"  # the kernel has no scope for IPv6 routes
        elif scope == "host" and gateway is not None:
            # Whatever the node: "Route with host scope can not have a gateway".
            raise ModelError(f"route {dst} via {address_text(gateway)}: a route of scope host "
                             "has no gateway (the kernel refuses it); leave the scope out")
        elif scope == "link" and gateway is not None:
            # The kernel looks the gateway up among routes of scope host (fib_check_nh_v4_gw):
            # "Nexthop has invalid gateway", and with onlink "Nexthop has invalid scope".
            # Only a gateway that is the node's own address passes: a route to itself.
            raise ModelError(f"route {dst} via {address_text(gateway)}: a route of scope link "
                             "has no gateway (the kernel refuses it: \"Nexthop has invalid "
                             "gateway\", with onlink \"invalid scope\"; a route via a "
                             "gateway is of scope universe); leave the scope out")
        elif scope is None:
            scope = "universe" if gateway is not None else "link"
        object.__setattr__(self, "scope", scope)
        key = ("route", family, self.table, int(dst.network_address), dst.prefixlen, metric)
        content = (
            -1 if gateway is None else int(gateway),
            self.device or "",
            _SCOPES.index(scope),
            self.protocol,
        )
        self._seal(key, content)

    def _move_zone_to_device(self) -> None:
        """``via fe80::1%eth0`` is ``via fe80::1 dev eth0``: the zone is kept as the device.

        Left on the gateway, the zone compared equal to a gateway without one but
        was written out (``ip route``, ifupdown, networkd refuse ``%``) and lost
        on the way back from the kernel, which stores only the device.
        """
        gateway = self.gateway
        if not isinstance(gateway, ipaddress.IPv6Address) or gateway.scope_id is None:
            return
        zone = gateway.scope_id
        if self.device is not None and self.device != zone:
            raise ModelError(f"route {self.destination}: gateway {str(gateway)[:60]} names "
                             f"interface {zone}, but the device is {self.device}")
        object.__setattr__(self, "device", zone)
        object.__setattr__(self, "gateway", ipaddress.IPv6Address(int(gateway)))

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.destination.version

    @property
    def clash_key(self) -> tuple[Any, ...]:
        """Table and destination: two routes there compete whatever their metrics."""
        return self._key[:5]

    def met_by(self, other: NetObject) -> bool:
        """A foreign route to the same place through the same next hop (any protocol, metric)."""
        return (
            isinstance(other, Route)
            and other.clash_key == self.clash_key
            and other.gateway == self.gateway
            and (self.device is None or other.device == self.device)
        )

    @property
    def tier(self) -> int:
        """1 for a route via a gateway: the kernel resolves the gateway through a device
        route, which may be another of k3snet's (the only one reaching that network)."""
        return 0 if self.gateway is None else 1

    def held_by(self, current: NetObject) -> bool:
        """``current`` is this route with the device the kernel chose: this one names a
        gateway but no device, and every other field is equal (the kernel reports the
        device it picked, so without this a device-less route was replaced on every pass)."""
        return (
            self.device is None
            and type(current) is Route
            and current.device is not None
            and current._key == self._key
            and current.gateway == self.gateway
            and current.scope == self.scope
            and current.protocol == self.protocol
        )

    def conflicts_with(self, other: NetObject) -> bool:
        """A foreign route to the same destination in the same table, elsewhere, or one
        there that k3snet cannot model (a :class:`RouteBlock`)."""
        if isinstance(other, RouteBlock):
            return other.clash_key == self.clash_key
        return (
            isinstance(other, Route)
            and other.clash_key == self.clash_key
            and not self.met_by(other)
        )

    @property
    def shadow_span(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The routes to the same table and destination at this metric or a higher one:
        the kernel prefers this route to them (at an equal metric the two share a slot)."""
        return _behind(self.rank, self._key)

    def shadowed_by(self, other: NetObject) -> bool:
        """A foreign route or block to the same table and destination at a metric no
        higher: the span's test without building it (the planner asks once per
        foreign route at the destination of a route in place)."""
        if not isinstance(other, Route | RouteBlock):
            return False
        return other.metric <= self.metric and other.clash_key == self.clash_key  # type: ignore[operator]

    def describe(self) -> str:
        """``route DST [via GW] [dev DEV] table T metric M [scope S] proto P``."""
        parts = ["route", network_text(self.destination)]
        if self.gateway is not None:
            parts += ["via", address_text(self.gateway)]
        if self.device is not None:
            parts += ["dev", self.device]
        table = _TABLE_NAMES.get(self.table, str(self.table))
        parts += ["table", table, "metric", str(self.metric)]
        default_scope = "universe" if self.gateway is not None or self.family == 6 else "link"
        if self.scope != default_scope:
            parts += ["scope", str(self.scope)]
        parts += ["proto", _PROTOCOL_NAMES.get(self.protocol, str(self.protocol))]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "destination": network_text(self.destination),
            "gateway": None if self.gateway is None else address_text(self.gateway),
            "device": self.device,
            "table": self.table,
            "metric": self.metric,
            "scope": self.scope,
            "protocol": protocol_name(self.protocol),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["destination"],
            gateway=data.get("gateway"),
            device=data.get("device"),
            table=data.get("table", MAIN_TABLE),
            metric=data.get("metric"),
            scope=data.get("scope"),
            protocol=data.get("protocol", K3SNET_ROUTE_PROTOCOL),
        )


def _behind(rank: int, slot: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The sort keys of the routes a route in ``slot`` (a :class:`Route` key) comes before:
    same table and destination, metric ``slot[5]`` up to the last (metrics are u32)."""
    return (rank, *slot), (rank, *slot[:5], 2**32)


def _what(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"a route block's kind is a non-empty string, got {value!r}")
    return one_line(value)


def _block_device(value: object) -> str | None:
    # The kernel's name as read (a byte that is no UTF-8 as a lone surrogate): any the
    # kernel may hold, which the model's interface names are not. Counted in the bytes
    # the kernel holds: such a surrogate (U+DC80 .. U+DCFF) is its one byte, any other
    # 3 (a JSON "\ud800"); counted 3, six of them were refused and the route with them.
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value or "/" in value \
            or _kernel_bytes(value) >= IFNAMSIZ:
        raise ModelError(f"a route block's device is a name the kernel may hold, got {value!r}")
    return value


def _kernel_bytes(name: str) -> int:
    """The bytes ``name`` stands for in the kernel (see :func:`_block_device`)."""
    try:
        return len(name.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a surrogate no byte stands for: 3, as UTF-8 writes it
        return sum(1 if 0xDC80 <= ord(char) <= 0xDCFF
                   else len(char.encode("utf-8", "surrogatepass")) for char in name)


@attrs.frozen(eq=False)
class RouteBlock(NetObject):
    """A route k3snet cannot model, standing at a table and destination.

    Only ever *observed* (foreign): a route of another type (``blackhole``,
    ``unreachable``, ``prohibit``, ``throw``...), a multipath, nexthop-object,
    encap or ``via`` route, or one through a device whose name the model refuses.
    ``what`` says which; ``device``, for the last, the name the kernel holds (``vé``,
    one of an ESC: JSON escapes it), shown ``dev $'a\\x1bb'`` (a word a shell reads
    back as that very name). A wanted :class:`Route` to the same table and destination
    conflicts with it, whatever their metrics, as with another route there: at the same
    metric the kernel refuses k3snet's add, and at another one of the two shadows
    the other. Of k3snet's own protocol too: k3snet never writes such a route.

    >>> block = RouteBlock("192.168.2.0/24", what="multipath", protocol="static")
    >>> block.describe()
    'multipath route 192.168.2.0/24 table main metric 0 proto static'
    >>> Route("192.168.2.0/24", gateway="192.168.1.1").conflicts_with(block)
    True
    """

    kind: ClassVar[str] = "route"
    type_name: ClassVar[str] = "route-block"
    rank: ClassVar[int] = 1
    written: ClassVar[bool] = False

    destination: Network = attrs.field(converter=parse_network)
    table: int = attrs.field(default=MAIN_TABLE, converter=_table, kw_only=True)
    metric: int | None = attrs.field(default=None, kw_only=True)
    what: str = attrs.field(default="unmodelled", converter=_what, kw_only=True)
    protocol: int = attrs.field(default=K3SNET_ROUTE_PROTOCOL, converter=_protocol, kw_only=True)
    device: str | None = attrs.field(default=None, converter=_block_device, kw_only=True)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        dst, metric = self.destination, self.metric
        v6 = dst.version == 6
        if metric is None or (v6 and metric == 0):
            metric = _IPV6_DEFAULT_METRIC if v6 else 0
        object.__setattr__(self, "metric", _metric(metric))
        key = ("route-block", dst.version, self.table, int(dst.network_address), dst.prefixlen,
               metric)
        # Two such routes through two devices (IPv6 holds both) are two blocks.
        self._seal(key, (self.what, self.protocol, self.device or ""))

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.destination.version

    @property
    def clash_key(self) -> tuple[Any, ...]:
        """Table and destination, as :attr:`Route.clash_key` says them."""
        return ("route", *self._key[1:5])

    @property
    def shadow_span(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The routes to the same table and destination at this metric or a higher one,
        as :attr:`Route.shadow_span` says them: this block comes first."""
        return _behind(self.rank, self.slot)

    @property
    def slot(self) -> tuple[Any, ...]:
        """Table, destination and metric, as a :class:`Route`'s key says them: the kernel
        holds one route a slot (an add there is refused, a replace takes it)."""
        return ("route", *self._key[1:])

    def describe(self) -> str:
        """``WHAT route DST [dev NAME] table T metric M proto P``, the name a shell word."""
        table = _TABLE_NAMES.get(self.table, str(self.table))
        dev = "" if self.device is None else f" dev {shell_word(self.device)}"
        return (f"{self.what} route {network_text(self.destination)}{dev} table {table} metric "
                f"{self.metric} proto {_PROTOCOL_NAMES.get(self.protocol, str(self.protocol))}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "type": self.type_name,
            "destination": network_text(self.destination),
            "table": self.table,
            "metric": self.metric,
            "what": self.what,
            "protocol": protocol_name(self.protocol),
            # The name as it is: JSON escapes what is not printable (\u001b).
            **({} if self.device is None else {"device": self.device}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteBlock:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["destination"],
            table=data.get("table", MAIN_TABLE),
            metric=data.get("metric"),
            what=data.get("what", "unmodelled"),
            protocol=data.get("protocol", K3SNET_ROUTE_PROTOCOL),
            device=data.get("device"),
        )

