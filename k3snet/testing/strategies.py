"""Hypothesis strategies for k3snet values.

Every function checks its arguments up front and returns a
``SearchStrategy``. Values are built from integers (addresses, prefix lengths,
indexes into small pools), so failing examples shrink towards small, readable
ones: ``10.0.0.0/8`` rather than a random /27.

Pools (``devices``, ``tables``, ``metrics`` ...) are small on purpose: drawn
independently, two states then share keys often, which is what exercises
replace, keep and delete in a planner test.

>>> from hypothesis import given
>>> @given(routes(family=4))
... def test_route_round_trips(route):
...     assert Route.from_dict(route.to_dict()) == route
>>> test_route_round_trips()
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from k3snet.errors import ModelError
from k3snet.model import NetObject, validate_interface_name
from k3snet.model.cidr import (
    Address,
    Network,
    aggregate,
    not_unicast,
    not_unicast_network,
    parse_network,
)
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, NatBlock, SnatRule, snat_address_problem
from k3snet.model.route import (
    K3SNET_ROUTE_PROTOCOL,
    Route,
    RouteBlock,
    RouteScope,
    next_hop_problem,
)
from k3snet.model.state import KINDS, State
from k3snet.model.sysctl import Sysctl, sysctl_name
from k3snet.spec import (
    Cluster,
    Destination,
    ForwardPolicy,
    MasqueradeMode,
    MasqueradePolicy,
    Spec,
)
from k3snet.testing._once import lists_of, maybe, pick

__all__ = [
    "DEFAULT_DEVICES",
    "EDGE_DESTINATIONS",
    "FOREIGN_ROUTE_PROTOCOLS",
    "addresses",
    "cni_rules",
    "families",
    "for_type",
    "foreign_objects",
    "foreign_routes",
    "forward_blocks",
    "forward_rules",
    "interface_names",
    "masquerade_rules",
    "nat_blocks",
    "nat_rules",
    "networks",
    "objects",
    "replacements",
    "route_blocks",
    "routes",
    "snat_rules",
    "specs",
    "state_pairs",
    "states",
    "sysctls",
]

DEFAULT_DEVICES: tuple[str, ...] = ("eth0", "eth1", "cni0")
_BITS = {4: 32, 6: 128}
_WHOLE = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}
_FAMILIES: dict[int | None, SearchStrategy[int]] = {
    None: st.sampled_from((4, 6)), 4: st.just(4), 6: st.just(6)}
_ADDRESS_OF: dict[int, SearchStrategy[Address]] = {
    4: st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    6: st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
}
# Next hops: any address but the unspecified one, which the kernel reads as no gateway,
# and IPv4-mapped IPv6 ones, which it refuses (Route refuses both). IPv6 ones are link-local
# as often (fe80::/64, what a router advertises and most IPv6 routes go through), which
# 128 random bits never are.
_LINK_LOCAL_GATEWAYS: SearchStrategy[Address] = st.integers(1, 2**64 - 1).map(
    lambda host: ipaddress.IPv6Address((0xfe80 << 112) | host))
_GLOBAL_GATEWAYS: SearchStrategy[Address] = st.integers(1, 2**128 - 1).map(
    ipaddress.IPv6Address).filter(lambda a: a.ipv4_mapped is None)
_GATEWAY_OF: dict[int, SearchStrategy[Address]] = {
    4: st.integers(1, 2**32 - 1).map(ipaddress.IPv4Address),
    6: st.one_of(_GLOBAL_GATEWAYS, _LINK_LOCAL_GATEWAYS),
}
# SNAT sources: unicast addresses (SnatRule refuses the others: no reply comes back).
_SNAT_TO: dict[int, SearchStrategy[Address]] = {
    version: strategy.filter(lambda a: snat_address_problem(a) is None)
    for version, strategy in _ADDRESS_OF.items()}
# The link-local prefixes (169.254.0.0/16, fe80::/10), which a NAT rule's destination is
# drawn inside at times (random prefixes almost never are): an SNAT to a link-local address
# of the node is taken for such a destination alone.
_LINK_LOCAL_NET: dict[int, Network] = {4: ipaddress.IPv4Network("169.254.0.0/16"),
                                        6: ipaddress.IPv6Network("fe80::/10")}
_SNAT_TO_LINK: dict[int, SearchStrategy[Address]] = {
    4: st.integers(1, 2**16 - 2).map(
        lambda host: ipaddress.IPv4Address(int(_LINK_LOCAL_NET[4].network_address) + host)),
    6: st.integers(1, 2**118 - 1).map(
        lambda host: ipaddress.IPv6Address(int(_LINK_LOCAL_NET[6].network_address) + host)),
}
# Next hops a route without device can have: not link-local IPv6 (Route refuses it).
_DEVICELESS_GATEWAY_OF: dict[int, SearchStrategy[Address]] = {
    4: _GATEWAY_OF[4], 6: _GLOBAL_GATEWAYS.filter(lambda a: not a.is_link_local)}
# A spec's gateways: no multicast, loopback or broadcast address (the spec refuses them;
# a route read from the kernel may have one).
_SPEC_GATEWAY_OF: dict[int, SearchStrategy[Address]] = {
    version: strategy.filter(lambda a: not_unicast(a) is None)
    for version, strategy in _GATEWAY_OF.items()}
_ADDRESSES: dict[int | None, SearchStrategy[Address]] = {
    4: _ADDRESS_OF[4], 6: _ADDRESS_OF[6], None: st.one_of(_ADDRESS_OF[4], _ADDRESS_OF[6])}
_FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
# Route protocols foreign routes carry: boot, static, bird, dhcp (see Route's docs).
FOREIGN_PROTOCOLS: tuple[int, ...] = (3, 4, 12, 16)
_SYSCTL_NAMES = (
    *_FORWARDING,
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.conf.eth0.rp_filter",
    "net.ipv4.conf.eth1.rp_filter",
    "net.ipv4.conf.cni0.rp_filter",
    "net.ipv6.conf.all.accept_ra",
    "net.ipv6.conf.default.accept_ra",
    "net.ipv6.conf.eth0.accept_ra",
    # A VLAN interface's: its name holds a dot, so the canonical name is slash-spelled
    # (sysctl(8)'s net/ipv4/conf/eth0.100/rp_filter).
    "net/ipv4/conf/eth0.100/rp_filter",
)


def _check_family(family: int | None) -> None:
    if family not in (None, 4, 6):
        raise ModelError(f"family must be 4, 6 or None, got {family!r}")


def _pool(name: str, values: Sequence[Any], *, allow_empty: bool = False,
          each: Callable[[Any], object] | None = None) -> None:
    """Refuse a pool that is not a non-empty sequence, or (``each``: the model object a draw
    makes of a value) that holds a value the model refuses: here, not in the first draw."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ModelError(f"{name} must be a sequence, got {values!r}")
    if not values and not allow_empty:
        raise ModelError(f"{name} must not be empty")
    if each is None:
        return
    for value in values:
        try:
            each(value)
        except (ModelError, TypeError, ValueError) as exc:
            raise ModelError(f"{name}: {value!r} cannot be drawn: {exc}") from exc


def _interface(name: str | None) -> None:
    if name is not None:
        validate_interface_name(name)


_SOME_ROUTE = parse_network("10.0.0.0/8")


def _route_with(**fields: Any) -> Route:
    return Route(_SOME_ROUTE, device="eth0", **fields)


def families(family: int | None = None) -> SearchStrategy[int]:
    """4 or 6 (or only ``family`` when given)."""
    _check_family(family)
    return _FAMILIES[family]


def networks(
    family: int | None = None,
    *,
    within: Network | str | None = None,
    min_prefix: int | None = None,
    max_prefix: int | None = None,
) -> SearchStrategy[Network]:
    """CIDRs without host bits, prefix length in ``[min_prefix, max_prefix]``.

    Defaults: /8../32 for IPv4, /32../128 for IPv6 (no default routes: use
    ``min_prefix=0`` to allow them). ``within``: only CIDRs inside that parent
    (drawn there directly, never filtered; by default from the parent itself,
    ``min_prefix=parent.prefixlen + 1`` for strictly inside)::

        networks(within="192.168.0.0/16", min_prefix=24, max_prefix=28)
    """
    _check_family(family)
    if within is not None:
        parent = parse_network(within)
        if family not in (None, parent.version):
            raise ModelError(f"family {family} does not match within={parent}")
        return _inside(parent, min_prefix, max_prefix)
    for version in (4, 6) if family is None else (family,):
        _prefix_range(version, min_prefix, max_prefix)  # a bad range fails here, not in a draw
    return _networks(family, min_prefix, max_prefix)


# The strategies below that the composites ask for on every draw are made once per
# distinct arguments (lru_cache), for the reason k3snet.testing._once gives.

@functools.lru_cache(maxsize=1024)
def _networks(family: int | None, min_prefix: int | None,
              max_prefix: int | None) -> SearchStrategy[Network]:
    if family is None:
        return st.sampled_from((4, 6)).flatmap(
            lambda version: _networks(version, min_prefix, max_prefix))
    return _inside(_WHOLE[family], *_prefix_range(family, min_prefix, max_prefix))


@functools.lru_cache(maxsize=256)
def _host_offsets(count: int) -> SearchStrategy[int]:
    """Offsets of the addresses of a prefix of ``count`` addresses, but its first."""
    return st.integers(1, count - 1)


def _prefix_range(version: int, min_prefix: int | None, max_prefix: int | None,
                  ) -> tuple[int, int]:
    bits = _BITS[version]
    low = (8 if version == 4 else 32) if min_prefix is None else min_prefix
    high = bits if max_prefix is None else max_prefix
    if not 0 <= low <= high <= bits:
        raise ModelError(f"need 0 <= min_prefix <= max_prefix <= {bits}, got {low}..{high}")
    return low, high


def addresses(family: int | None = None, *,
              within: Network | str | None = None) -> SearchStrategy[Address]:
    """Single addresses of either family (``within``: only inside that CIDR)."""
    _check_family(family)
    if within is not None:
        parent = parse_network(within)
        if family not in (None, parent.version):
            raise ModelError(f"family {family} does not match within={parent}")
        return _in_network(parent)
    return _ADDRESSES[family]


def interface_names() -> SearchStrategy[str]:
    """Names k3snet accepts and the kernel gives an interface: 1..15 characters of
    ``[A-Za-z0-9_.@+-]``, not ``.``/``..``/``+``, not starting with ``@``, not ``all`` or
    ``default`` (``/proc/sys/net/ipv4/conf/all`` is every interface's: the kernel refuses
    those two). Capitals shrink to lower case (``a`` before ``A``)."""
    return _INTERFACE_NAMES


def _interface_name_drawn(name: str) -> bool:
    """The names of :data:`_NAME_ALPHABET`, 1..15 long, that :func:`interface_names` draws."""
    return name not in _NOT_INTERFACE_NAMES and not name.startswith("@")


_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_.@+-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NOT_INTERFACE_NAMES = frozenset({".", "..", "+", "all", "default"})
_INTERFACE_NAMES = st.text(_NAME_ALPHABET, min_size=1, max_size=15).filter(_interface_name_drawn)


@functools.lru_cache(maxsize=1024)
def _in_network(net: Network) -> SearchStrategy[Address]:
    first = int(net.network_address)
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    return st.integers(first, first + net.num_addresses - 1).map(make)


def routes(
    family: int | None = None,
    *,
    destinations: SearchStrategy[Network] | None = None,
    gateways: dict[str, Sequence[str]] | None = None,
    devices: Sequence[str | None] = DEFAULT_DEVICES,
    tables: Sequence[int] = (254, 100, 2**32 - 1),
    metrics: Sequence[int | None] = (None, 100),
    protocols: Sequence[int] = (K3SNET_ROUTE_PROTOCOL,),
    scopes: Sequence[RouteScope | None] = (None,),
) -> SearchStrategy[Route]:
    """Routes (protocol k3snet unless ``protocols`` says otherwise).

    Without ``destinations``, a destination is now and then one of the edges (the
    default route ``/0``, a host route ``/32`` or ``/128``, a link-local prefix:
    :data:`EDGE_DESTINATIONS`), which random prefixes almost never are; the tables
    include the largest (``2**32 - 1``, above rtm_table's byte).

    ``gateways`` maps a device to the gateway addresses valid on it (for kernel
    backends: addresses inside the device's connected prefixes); without it,
    gateways are arbitrary addresses. A route without gateway is a device route.
    ``None`` in ``devices`` draws a route via a gateway without device (the kernel
    picks it): its gateway comes from every device's in ``gateways``.
    ``scopes`` applies to IPv4 device routes (a route via a gateway keeps the
    kernel's ``universe``; IPv6 routes have no scope).
    """
    _check_family(family)
    _pool("devices", devices, each=_interface)
    _pool("tables", tables, each=lambda table: _route_with(table=table))
    _pool("metrics", metrics, each=lambda metric: _route_with(metric=metric))
    _pool("protocols", protocols, each=lambda protocol: _route_with(protocol=protocol))
    _pool("scopes", scopes, each=lambda scope: _route_with(scope=scope))
    if gateways is not None:
        _check_gateways(gateways, family, devices)

    @st.composite
    def build(draw: st.DrawFn) -> Route:
        version = draw(families(family))
        dest = draw(destinations if destinations is not None else _route_destinations(version))
        version = dest.version
        device = draw(pick(devices))
        gateway: Address | None = None
        if gateways is not None:
            pool = (gateways.get(device, ()) if device is not None
                    else [g for each in gateways.values() for g in each])
            choices = [g for g in pool if ipaddress.ip_address(g).version == version and (
                device is not None or next_hop_problem(ipaddress.ip_address(g), None) is None)]
            use_gateway = device is None or draw(st.booleans())
            if choices and use_gateway:
                gateway = ipaddress.ip_address(draw(pick(choices)))
            assume(gateway is not None or device is not None)
        elif device is None:
            gateway = draw(_DEVICELESS_GATEWAY_OF[version])
        elif draw(st.booleans()):
            gateway = draw(_GATEWAY_OF[version])
        scope = draw(pick(scopes)) if gateway is None and version == 4 else None
        return Route(dest, gateway=gateway, device=device, table=draw(pick(tables)),
                     metric=draw(pick(metrics)), scope=scope,
                     protocol=draw(pick(protocols)))

    return build()


EDGE_DESTINATIONS: Mapping[int, tuple[Network, ...]] = {
    4: tuple(ipaddress.IPv4Network(n) for n in (
        "0.0.0.0/0", "169.254.0.0/16", "169.254.169.254/32", "0.0.0.0/32",
        "255.255.255.255/32")),
    6: tuple(ipaddress.IPv6Network(n) for n in (
        "::/0", "fe80::/64", "2001:db8::1/128", "::/128",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")),
}
"""The route destinations :func:`routes` draws beside random prefixes, by family: the
default route, link-local prefixes (a cloud's metadata address among them) and host
routes at both ends of the address space (``0.0.0.0/32`` and ``::/128``: the default
route's address with a host route's length, which an encoding that leaves an all-zero
destination out writes as the default route)."""


@functools.lru_cache(maxsize=4)
def _route_destinations(version: int) -> SearchStrategy[Network]:
    """Random prefixes (:func:`networks`) and, at times, :data:`EDGE_DESTINATIONS`."""
    return st.one_of(networks(version), st.sampled_from(EDGE_DESTINATIONS[version]))


def _check_gateways(gateways: dict[str, Sequence[str]], family: int | None,
                    devices: Sequence[str | None]) -> None:
    """Each gateway a route on its device can have; and some route drawable at all."""
    if not isinstance(gateways, Mapping):
        raise ModelError(f"gateways must map a device to its gateways, got {gateways!r}")
    usable: set[int] = set()
    for device, pool in gateways.items():
        def via(gateway: str, on: str = device) -> Route:
            whole = "0.0.0.0/0" if ipaddress.ip_address(gateway).version == 4 else "::/0"
            return Route(whole, gateway=gateway, device=on)

        _pool(f"gateways[{device!r}]", pool, allow_empty=True, each=via)
        usable |= {ipaddress.ip_address(g).version for g in pool
                   if next_hop_problem(ipaddress.ip_address(g), None) is None}
    wanted = {4, 6} if family is None else {family}
    if all(d is None for d in devices) and not usable & wanted:
        families_wanted = " or ".join(map(str, sorted(wanted)))
        raise ModelError(f"devices {list(devices)!r} draw only routes via a gateway without "
                         f"device, and gateways has none of family {families_wanted} that such "
                         "a route can have")


@functools.lru_cache(maxsize=256)
def _ints(low: int, high: int) -> SearchStrategy[int]:
    return st.integers(low, high)


def _draw_inside(draw: st.DrawFn, parent: Network, depth: int) -> Network:
    """A prefix strictly inside ``parent``, 1 to ``depth`` bits longer, drawn from integers
    (a strategy made per parent would be checked anew in every draw)."""
    bits = _BITS[parent.version]
    longer = draw(_ints(1, min(depth, bits - parent.prefixlen)))
    index = draw(_ints(0, 2**longer - 1))
    prefix = parent.prefixlen + longer
    return type(parent)((int(parent.network_address) | (index << (bits - prefix)), prefix))


@functools.lru_cache(maxsize=4)
def _nat_destinations(version: int) -> SearchStrategy[Network | None]:
    """A NAT rule's destination, if any: anywhere, or link-local (made once per family:
    a ``one_of`` made in every draw missed ``maybe``'s cache and was checked anew)."""
    longest = 28 if version == 4 else 120
    return maybe(st.one_of(networks(version, max_prefix=longest),
                           networks(within=_LINK_LOCAL_NET[version], max_prefix=longest)))


def _nat_fields(draw: st.DrawFn, family: int | None, sources: SearchStrategy[Network] | None,
                devices: Sequence[str | None]) -> dict[str, Any]:
    version = draw(families(family))
    source = draw(sources if sources is not None else networks(version, max_prefix=24 if
                                                                version == 4 else 64))
    version = source.version
    destination = draw(_nat_destinations(version))
    exclude: list[Network] = []
    if draw(st.booleans()):
        if destination is None:
            exclude = draw(lists_of(networks(version), 0, 3))
        elif destination.prefixlen < _BITS[version]:
            # Up to three prefixes strictly inside the destination, down to 8 bits below it:
            # a half (what shrinking gives), a small hole, several holes.
            exclude = [_draw_inside(draw, destination, 8) for _ in range(draw(_ints(1, 3)))]
            if list(aggregate(exclude)) == [destination]:  # the rule would never match
                exclude = exclude[:1]
    return {
        "source": source,
        "destination": destination,
        "exclude": exclude,
        "out_interface": draw(pick(devices)),
        "random_fully": draw(st.booleans()),
    }


def masquerade_rules(
    family: int | None = None,
    *,
    sources: SearchStrategy[Network] | None = None,
    devices: Sequence[str | None] = (None, *DEFAULT_DEVICES[:2]),
) -> SearchStrategy[MasqueradeRule]:
    """Masquerade rules, with and without destination, exclusions and out interface."""
    _check_family(family)
    _pool("devices", devices, each=_interface)

    @st.composite
    def build(draw: st.DrawFn) -> MasqueradeRule:
        fields = _nat_fields(draw, family, sources, devices)
        return MasqueradeRule(fields.pop("source"), **fields)

    return build()


def snat_rules(
    family: int | None = None,
    *,
    sources: SearchStrategy[Network] | None = None,
    devices: Sequence[str | None] = (None, *DEFAULT_DEVICES[:2]),
) -> SearchStrategy[SnatRule]:
    """SNAT rules to a unicast address of the rule's family (a link-local one at times
    when the destination is link-local, the one destination SnatRule takes it for)."""
    _check_family(family)
    _pool("devices", devices, each=_interface)

    @st.composite
    def build(draw: st.DrawFn) -> SnatRule:
        fields = _nat_fields(draw, family, sources, devices)
        version, destination = fields["source"].version, fields["destination"]
        to_address = draw(_SNAT_TO[version])
        if destination is not None and destination.subnet_of(
                _LINK_LOCAL_NET[version]) and draw(st.booleans()):
            to_address = draw(_SNAT_TO_LINK[version])  # taken for a link-local destination
        return SnatRule(fields.pop("source"), to_address=to_address, **fields)

    return build()


def nat_rules(
    family: int | None = None, **options: Any
) -> SearchStrategy[MasqueradeRule | SnatRule]:
    """Either kind of NAT rule (options as for :func:`masquerade_rules`)."""
    return st.one_of(masquerade_rules(family, **options), snat_rules(family, **options))


def forward_rules(
    family: int | None = None,
    *,
    sources: SearchStrategy[Network] | None = None,
    destinations: SearchStrategy[Network] | None = None,
    devices: Sequence[str | None] = (None, *DEFAULT_DEVICES[:2]),
) -> SearchStrategy[ForwardRule]:
    """Forward-accept rules (pod CIDR to destination), from or to anywhere (``/0``) at
    times.

    Narrow ``sources`` and ``destinations`` make two draws share a key (and so
    differ only in their interfaces: a replace) often.
    """
    _check_family(family)
    _pool("devices", devices, each=_interface)

    @st.composite
    def build(draw: st.DrawFn) -> ForwardRule:
        version = draw(families(family))
        source = draw(sources if sources is not None else _anywhere_or(networks(version)))
        version = source.version
        destination = draw(destinations if destinations is not None
                           else _anywhere_or(networks(version)))
        if destination.version != version:
            destination = draw(_anywhere_or(networks(version)))
        return ForwardRule(source, destination,
                           in_interface=draw(pick(devices)),
                           out_interface=draw(pick(devices)))

    return build()


def _anywhere_or(nets: SearchStrategy[Network]) -> SearchStrategy[Network]:
    """``nets``' networks, or at times the whole address space of their family (``/0``:
    a forward rule from or to anywhere, which ``networks()`` leaves out by default)."""
    return st.one_of(nets, nets.map(lambda net: _WHOLE[net.version]))


def sysctls(
    names: Sequence[str] = _SYSCTL_NAMES,
    values: Sequence[str] = ("0", "1", "2"),
    *,
    previous: Sequence[str | None] = (None,),
) -> SearchStrategy[Sysctl]:
    """Sysctls from a small pool of names and values.

    ``previous`` is the pool of values a backend recorded before taking the
    parameter over (``None``: not recorded); it never takes part in equality.
    """
    _pool("names", names, each=sysctl_name)
    _pool("values", values, each=lambda value: Sysctl(_FORWARDING[0], value))
    _pool("previous", previous, each=lambda value: Sysctl(_FORWARDING[0], "0", previous=value))
    return st.builds(Sysctl, st.sampled_from(names), st.sampled_from(values),
                     previous=st.sampled_from(previous))


def _of_kind(kind: str, family: int | None, every_shape: bool) -> SearchStrategy[NetObject]:
    strategy: SearchStrategy[NetObject]
    if kind == "sysctl":
        strategy = sysctls(previous=(None, "0", "1") if every_shape else (None,))
    elif kind == "route" and every_shape:
        strategy = routes(family, protocols=(K3SNET_ROUTE_PROTOCOL, *FOREIGN_PROTOCOLS),
                          scopes=(None, "link", "host", "universe"))
    elif kind == "route":
        strategy = routes(family)
    elif kind == "forward":
        strategy = forward_rules(family)
    else:
        strategy = nat_rules(family)
    return strategy


def objects(
    kinds: Sequence[str] = KINDS, family: int | None = None, *, every_shape: bool = False
) -> SearchStrategy[NetObject]:
    """Any node object of the given kinds.

    By default only shapes a backend writes for k3snet (routes of protocol
    k3snet, sysctls without a recorded previous value). ``every_shape=True``
    also draws what a node holds besides: routes of other protocols and scopes,
    sysctls with a ``previous`` value.
    """
    _check_family(family)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ModelError(f"kinds must be a non-empty subset of {', '.join(KINDS)}, got {kinds!r}")
    return st.one_of([_of_kind(k, family, every_shape) for k in kinds])


def replacements(obj: NetObject) -> SearchStrategy[NetObject]:
    """Objects with ``obj``'s key and other content: what a plan must *replace* ``obj`` with.

    A route with another next hop, scope or protocol; a forward rule with other
    interfaces; a NAT rule with other exclusions, ``random_fully``, SNAT address,
    or of the other NAT type (masquerade and SNAT share one key space); a sysctl
    with another value.
    """
    if not isinstance(obj, NetObject):
        raise ModelError(f"replacements() needs a k3snet object, got {obj!r}")
    strategy: SearchStrategy[NetObject]
    if isinstance(obj, Route):
        strategy = _route_replacements(obj)
    elif isinstance(obj, ForwardRule):
        interfaces = st.sampled_from((None, *DEFAULT_DEVICES))
        strategy = st.builds(ForwardRule, st.just(obj.source), st.just(obj.destination),
                             in_interface=interfaces, out_interface=interfaces)
    elif isinstance(obj, MasqueradeRule | SnatRule):
        strategy = _nat_replacements(obj)
    elif isinstance(obj, Sysctl):
        # "1" before the value: another value always, and decimal ("00" is no value).
        strategy = st.builds(Sysctl, st.just(obj.name),
                             st.sampled_from(("0", "1", "2", "1" + obj.value)))
    else:
        raise ModelError(f"no replacements strategy for {type(obj).__name__}")
    return strategy.filter(lambda other: other != obj)


def _route_replacements(route: Route) -> SearchStrategy[NetObject]:
    @st.composite
    def build(draw: st.DrawFn) -> Route:
        version = route.family
        edges = [a for a in (route.gateway, *_edges(route.destination))
                 if a is not None and not a.is_unspecified and next_hop_problem(a, "eth0") is None]
        # No usable edge (0.0.0.0/32, an IPv4-mapped prefix): sampling an empty list raises.
        gateway = draw(st.none() | (st.sampled_from(edges) if edges else st.nothing())
                       | _GATEWAY_OF[version])
        device = draw(pick((None, *DEFAULT_DEVICES))
                      if gateway is not None and next_hop_problem(gateway, None) is None
                      else pick(DEFAULT_DEVICES))
        scopes: tuple[RouteScope | None, ...] = (None, "link", "host")
        scope = draw(pick(scopes)) if gateway is None and version == 4 else None
        return Route(route.destination, gateway=gateway, device=device, table=route.table,
                     metric=route.metric, scope=scope,
                     protocol=draw(pick((route.protocol, *FOREIGN_PROTOCOLS))))

    return build()


def _edges(net: Network) -> tuple[Address, ...]:
    return (net.network_address, net.broadcast_address)


def _nat_replacements(rule: MasqueradeRule | SnatRule) -> SearchStrategy[NetObject]:
    @st.composite
    def build(draw: st.DrawFn) -> MasqueradeRule | SnatRule:
        exclude: list[Network] = []
        whole = rule.destination
        if whole is not None and whole.prefixlen < _BITS[rule.family] and draw(st.booleans()):
            halves: list[Network] = list(whole.subnets(prefixlen_diff=1))
            exclude = [draw(pick(halves))]
        elif whole is None and draw(st.booleans()):
            exclude = draw(lists_of(networks(rule.family), 1, 2))
        fields: dict[str, Any] = {
            "destination": rule.destination, "exclude": exclude,
            "out_interface": rule.out_interface, "random_fully": draw(st.booleans()),
        }
        if draw(st.booleans()):
            return MasqueradeRule(rule.source, **fields)
        return SnatRule(rule.source, to_address=draw(_SNAT_TO[rule.family]), **fields)

    return build()


def states(
    owned: SearchStrategy[NetObject] | None = None,
    *,
    foreign: SearchStrategy[NetObject] | None = None,
    min_owned: int = 0,
    max_owned: int = 12,
    min_foreign: int = 0,
    max_foreign: int = 6,
) -> SearchStrategy[State]:
    """States with unique owned keys, and foreign objects in slots of their own.

    A foreign object never shares a key with an owned one (the kernel could not
    hold both), but may well provide or block what another state wants. Foreign
    objects come from ``owned``'s pool unless ``foreign`` is given
    (:func:`foreign_objects` draws what a K3s node really holds besides).
    """
    if not 0 <= min_owned <= max_owned or not 0 <= min_foreign <= max_foreign:
        raise ModelError("need 0 <= min_owned <= max_owned and 0 <= min_foreign <= max_foreign")
    _check_strategies(owned=owned, foreign=foreign)
    owned_objects = owned if owned is not None else objects()
    foreign_objects = foreign if foreign is not None else owned_objects
    # Made once: a strategy made inside the draw is checked anew by Hypothesis every time.
    owned_lists = st.lists(owned_objects, min_size=min_owned, max_size=max_owned,
                           unique_by=_key_of)
    foreign_lists = st.lists(foreign_objects, min_size=min_foreign, max_size=max_foreign,
                             unique_by=_key_of)

    @st.composite
    def build(draw: st.DrawFn) -> State:
        mine = draw(owned_lists)
        taken = {o.key for o in mine}
        theirs = [o for o in draw(foreign_lists) if o.key not in taken]
        # Topped up one at a time where owned objects took keys: a list of the minimum
        # size, of which some fell on owned keys, was thrown away, and with a small pool
        # most draws were (hypothesis's filter_too_much health check). Not by drawing a
        # longer list: one longer than the pool's distinct objects is an InvalidArgument.
        short = min_foreign - len(theirs)
        for _ in range(4 * short if short > 0 else 0):
            if len(theirs) >= min_foreign:
                break
            extra = draw(foreign_objects)
            if extra.key not in taken and all(o.key != extra.key for o in theirs):
                theirs.append(extra)
        assume(len(theirs) >= min_foreign)  # too few once the taken keys are left out
        return State(owned=mine, foreign=theirs)

    return build()


def _check_strategies(**given: object) -> None:
    for name, value in given.items():
        if value is not None and not isinstance(value, SearchStrategy):
            raise ModelError(f"{name} must be a strategy of k3snet objects (such as "
                             f"objects()), got {value!r}")


def _key_of(obj: NetObject) -> tuple[Any, ...]:
    return obj.key


def state_pairs(
    owned: SearchStrategy[NetObject] | None = None,
    *,
    foreign: SearchStrategy[NetObject] | None = None,
    min_owned: int = 17,
    max_owned: int = 40,
    min_changes: int = 2,
    max_changes: int = 5,
    max_foreign: int = 6,
) -> SearchStrategy[tuple[State, State]]:
    """(observed, desired) pairs: a large observed state and a few changes to it.

    The desired state differs from the observed one in ``min_changes`` to
    ``max_changes`` keys (each an add, a delete or a replace by
    :func:`replacements`). The defaults (at least 17 objects, at least two
    changes) draw what independent :func:`states` almost never do: a few changes
    in a state large enough for the planner's small-subset path. Foreign
    objects (observed side only) hold keys of their own.

    A pool of fewer keys than ``min_owned`` gives what it holds: ``state_pairs(sysctls())``
    (ten names) draws up to ten sysctls, and a change it cannot make as an add (every
    key taken) is a delete or a replace.
    """
    if not 0 <= min_owned <= max_owned or not 1 <= min_changes <= max_changes:
        raise ModelError("need 0 <= min_owned <= max_owned and 1 <= min_changes <= max_changes")
    if max_foreign < 0:
        raise ModelError("max_foreign must be >= 0")
    _check_strategies(owned=owned, foreign=foreign)
    owned_objects = owned if owned is not None else objects()
    foreign_objects = foreign if foreign is not None else objects(every_shape=True)
    # st.lists(min_size=min_owned, unique_by=...) of a pool of fewer keys filtered out
    # every example: state_pairs(sysctls()) failed Hypothesis' health check.
    sizes = st.integers(min_owned, max_owned)
    foreign_lists = st.lists(foreign_objects, max_size=max_foreign, unique_by=_key_of)
    changes = st.integers(min_changes, max_changes)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[State, State]:
        mine = _distinct(draw, owned_objects, draw(sizes))
        desired = {o.key: o for o in mine}
        keys = sorted(desired)
        touched: set[tuple[Any, ...]] = set()
        for _ in range(draw(changes)):
            action = draw(pick(("add", "delete", "replace")))
            untouched = [k for k in keys if k not in touched]
            if action == "add" or not untouched:
                # A key of its own: re-adding a deleted key would be one replace, not two changes.
                new = _draw_new(draw, owned_objects, desired.keys() | touched)
                if new is not None:
                    desired[new.key] = new
                    touched.add(new.key)
                    continue
                assume(untouched)  # the pool has no key left to add, nor one to change
                action = draw(pick(("delete", "replace")))
            key = draw(pick(untouched))
            touched.add(key)
            if action == "delete":
                del desired[key]
            else:
                desired[key] = draw(replacements(desired[key]))
        taken = set(desired) | {o.key for o in mine}
        theirs = [o for o in draw(foreign_lists) if o.key not in taken]
        return State(owned=mine, foreign=theirs), State(owned=desired.values())

    return build()


def _draw_new(draw: st.DrawFn, objects: SearchStrategy[NetObject],
              taken: Set[tuple[Any, ...]]) -> NetObject | None:
    """An object whose key is not ``taken`` in three tries, as a filter has, else ``None``
    (a filtered strategy made for each draw was checked anew every time)."""
    for _ in range(3):
        obj = draw(objects)
        if obj.key not in taken:
            return obj
    return None


def _distinct(draw: st.DrawFn, objects: SearchStrategy[NetObject],
              count: int) -> list[NetObject]:
    """``count`` objects of distinct keys, or as many as a pool of fewer keys gives in
    twice as many draws and 8 more (a coupon collector's ~29 draws for ten sysctl names)."""
    found: dict[tuple[Any, ...], NetObject] = {}
    for _ in range(2 * count + 8):
        if len(found) == count:
            break
        obj = draw(objects)
        found.setdefault(obj.key, obj)
    return list(found.values())


_MODES: tuple[MasqueradeMode, ...] = ("destinations", "all", "off")


def specs(
    family: int | None = None,
    *,
    min_destinations: int = 0,
    max_destinations: int = 4,
    modes: Sequence[MasqueradeMode] = _MODES,
    cluster: Cluster | None = None,
    destinations: SearchStrategy[Network] | None = None,
) -> SearchStrategy[Spec]:
    """Valid specs: destinations outside the cluster CIDRs, at most one per CIDR.

    Destinations draw exclusions (prefixes strictly inside them), a table, a
    metric, a device and a gateway; the policies draw an out interface for the
    masquerade, an in interface for forwarding, SNAT addresses (one per family,
    node addresses outside the pod CIDRs) and, in mode ``all``, non-masquerade
    CIDRs.

    Steering: ``family`` (4 or 6; default dual stack), ``min_destinations`` /
    ``max_destinations``, ``modes`` (the masquerade modes drawn, e.g.
    ``("all",)``), ``cluster`` (fixed pod and service CIDRs, e.g. K3s's
    defaults or a cluster's own; its pod CIDRs set the families) and
    ``destinations`` (where destination CIDRs come from, e.g.
    ``networks(within="192.168.0.0/16", min_prefix=24)``; CIDRs overlapping
    the cluster's are left out).
    """
    _check_family(family)
    if not 0 <= min_destinations <= max_destinations:
        raise ModelError("need 0 <= min_destinations <= max_destinations")
    _pool("modes", modes)
    bad_modes = [m for m in modes if m not in _MODES]
    if bad_modes:
        raise ModelError(f"modes must be among {', '.join(_MODES)}, got {bad_modes!r}")
    if cluster is not None and not isinstance(cluster, Cluster):
        raise ModelError(f"cluster must be a k3snet.spec.Cluster, got {cluster!r}")
    snat = {4: ipaddress.ip_address("192.168.1.5"), 6: ipaddress.ip_address("fd01:1::5")}
    fams: tuple[int, ...]
    if cluster is None:
        pod = {4: ipaddress.ip_network("10.42.0.0/16"), 6: ipaddress.ip_network("fd42:42::/56")}
        svc = {4: ipaddress.ip_network("10.43.0.0/16"), 6: ipaddress.ip_network("fd43:43::/112")}
        fams = (4, 6) if family is None else (family,)
        cluster = Cluster(pod_cidrs=[pod[f] for f in fams], service_cidrs=[svc[f] for f in fams])
    else:
        fams = tuple(sorted({n.version for n in cluster.pod_cidrs}))
        if family is not None and fams != (family,):
            raise ModelError(f"family {family} does not match the cluster's pod CIDRs")
        if not fams:
            raise ModelError("the cluster needs a pod CIDR")
    own = cluster.pod_cidrs + cluster.service_cidrs

    def outside(n: Network) -> bool:
        return (n.version in fams and not_unicast_network(n) is None
                and not any(n.overlaps(c) for c in own if c.version == n.version))

    chosen = destinations.filter(outside) if destinations is not None else None
    drawn = {version: networks(version, min_prefix=16 if version == 4 else 48,
                               max_prefix=30 if version == 4 else 126).filter(outside)
             for version in fams}

    @st.composite
    def destination(draw: st.DrawFn) -> Destination:
        cidr = draw(chosen if chosen is not None else drawn[draw(pick(fams))])
        version = cidr.version
        device = draw(pick((None, "eth0", "eth1")))
        gateway = draw(maybe(_SPEC_GATEWAY_OF[version])) if device is not None else None
        exclude: list[Network] = []
        if cidr.prefixlen < _BITS[version]:
            inside = networks(within=cidr, min_prefix=cidr.prefixlen + 1,
                              max_prefix=min(cidr.prefixlen + 8, _BITS[version]))
            # Exclusions that together cover the whole destination are left out: the
            # spec refuses them (tests/spec/test_compile_properties.py).
            exclude = draw(st.lists(inside, max_size=2, unique=True)
                           .filter(lambda ex: list(aggregate(ex)) != [cidr]))
        return Destination(cidr, gateway=gateway, device=device,
                           table=draw(pick((254, 100, 1000))),
                           metric=draw(pick((None, 0, 100))),
                           masquerade=draw(st.booleans()), forward=draw(st.booleans()),
                           exclude=exclude)

    all_destinations = st.lists(destination(), min_size=min_destinations,
                                max_size=max_destinations, unique_by=lambda d: d.cidr)
    kept_from_masquerade = st.lists(st.sampled_from(fams).flatmap(networks), max_size=2,
                                    unique=True)

    @st.composite
    def build(draw: st.DrawFn) -> Spec:
        dests = draw(all_destinations)
        mode = draw(pick(modes))
        non_masquerade: list[Network] = []
        if mode == "all":
            non_masquerade = draw(kept_from_masquerade)
        policy = MasqueradePolicy(
            mode=mode, random_fully=draw(st.booleans()),
            out_interface=draw(pick((None, "eth0", "eth2"))),
            snat_addresses=[snat[f] for f in fams if not any(
                snat[f] in c for c in own if c.version == f) and draw(st.booleans())],
            non_masquerade_cidrs=non_masquerade,
        )
        forward = ForwardPolicy(accept=draw(st.booleans()),
                                in_interface=draw(pick((None, "cni0", "flannel.1"))))
        return Spec(cluster=cluster, destinations=dests, masquerade=policy, forward=forward)

    return build()


@functools.lru_cache(maxsize=1024)
def _inside(parent: Network, min_prefix: int | None,
            max_prefix: int | None) -> SearchStrategy[Network]:
    """CIDRs inside ``parent``: a prefix length, then an index among the subnets of that length."""
    bits = _BITS[parent.version]
    low = parent.prefixlen if min_prefix is None else min_prefix
    high = bits if max_prefix is None else max_prefix
    if not parent.prefixlen <= low <= high <= bits:
        raise ModelError(f"need {parent.prefixlen} <= min_prefix <= max_prefix <= {bits} "
                         f"within {parent}, got {low}..{high}")
    base = int(parent.network_address)
    make = type(parent)
    if low == high:
        host_bits = bits - low
        count = 2 ** (low - parent.prefixlen)
        return st.integers(0, count - 1).map(lambda n: make((base | (n << host_bits), low)))
    return st.integers(low, high).flatmap(lambda prefix: _inside(parent, prefix, prefix))


# ---------------------------------------------------------------- what a K3s node holds besides
# Realistic foreign objects: the shapes the kernel, DHCP, routing daemons, flannel and
# K3s leave on a node, for planner and backend tests that must live next to them.

FOREIGN_ROUTE_PROTOCOLS: tuple[str, ...] = ("kernel", "boot", "static", "dhcp", "ra", "bird")
"""Who else writes routes on a node: connected prefixes, ``ip route add``, static config,
DHCP and router advertisements (default routes), a BGP daemon (bird)."""

_K3S = Cluster()


def foreign_routes(
    family: int | None = None,
    *,
    protocols: Sequence[str] = FOREIGN_ROUTE_PROTOCOLS,
    devices: Sequence[str] = ("eth0", "eth1"),
    cluster: Cluster = _K3S,
) -> SearchStrategy[Route]:
    """Routes other software writes, each in the shape it writes them.

    ``kernel``: a connected prefix on a device (scope link; IPv6 metric 256);
    ``dhcp`` / ``ra``: a default route via a gateway on the link (metric 100 /
    1024); ``boot``: what ``ip route add`` and flannel write (flannel: another
    node's pod subnet, a /24 of the cluster's pod CIDR via ``flannel.1``, or a /64 of
    the IPv6 one via ``flannel-v6.1``, the devices of flannel's VXLAN backend);
    ``static`` and ``bird``: prefixes via a gateway, in the main or another table.
    """
    _check_family(family)
    _pool("protocols", protocols)
    _pool("devices", devices, each=validate_interface_name)
    unknown = [p for p in protocols if p not in FOREIGN_ROUTE_PROTOCOLS]
    if unknown:
        raise ModelError(f"protocols must be among {', '.join(FOREIGN_ROUTE_PROTOCOLS)}, "
                         f"got {unknown!r}")
    lan = {4: parse_network("192.168.0.0/16"), 6: parse_network("fd01::/48")}

    @st.composite
    def build(draw: st.DrawFn) -> Route:
        protocol = draw(pick(protocols))
        version = draw(families(family))
        if protocol == "ra":  # router advertisements are IPv6 only
            version = 6
        device = draw(pick(devices))
        link = draw(networks(within=lan[version], min_prefix=24 if version == 4 else 64,
                             max_prefix=24 if version == 4 else 64))
        on_link = link.network_address + draw(_host_offsets(link.num_addresses))
        if protocol == "kernel":
            return Route(link, device=device, protocol="kernel",
                         scope="link" if version == 4 else None,
                         metric=None if version == 4 else 256)
        if protocol in ("dhcp", "ra"):
            gateway = parse_network("fe80::/64")[1] if protocol == "ra" else on_link
            return Route(parse_network("0.0.0.0/0" if version == 4 else "::/0"),
                         gateway=gateway, device=device, protocol=protocol,
                         metric=100 if protocol == "dhcp" else 1024)
        pods = [n for n in cluster.pod_cidrs if n.version == version]
        if protocol == "boot" and pods and draw(st.booleans()):
            # A node's subnet: a /24 (/64) of the pod CIDR, or all of a smaller one.
            node_subnet = max(pods[0].prefixlen, 24 if version == 4 else 64)
            subnet = draw(networks(within=pods[0], min_prefix=node_subnet,
                                   max_prefix=node_subnet))
            vxlan = "flannel.1" if version == 4 else "flannel-v6.1"
            return Route(subnet, gateway=subnet.network_address, device=vxlan,
                         protocol="boot")
        far = draw(networks(version, min_prefix=16 if version == 4 else 48,
                            max_prefix=28 if version == 4 else 112))
        return Route(far, gateway=on_link, device=device, protocol=protocol,
                     table=draw(pick((254, 100))) if protocol == "bird" else 254)

    return build()


def route_blocks(family: int | None = None, *,
                 cluster: Cluster = _K3S) -> SearchStrategy[RouteBlock]:
    """Routes other software writes that the Route model cannot hold, as the netlink
    backend reports them (:class:`~k3snet.model.RouteBlock`).

    ``bird`` / ``static``: a multipath (ECMP) route to a prefix, in the main or
    another table; ``bird``: Calico's blackhole of a pod block (a /26 of the
    cluster's pod CIDR; IPv6 a /122); ``static``: an ``unreachable`` fallback at the
    highest metric.
    """
    _check_family(family)
    if not isinstance(cluster, Cluster):
        raise ModelError(f"route_blocks needs a k3snet.spec.Cluster, got {cluster!r}")

    @st.composite
    def build(draw: st.DrawFn) -> RouteBlock:
        version = draw(families(family))
        shape = draw(_BLOCK_SHAPES)
        pods = [n for n in cluster.pod_cidrs if n.version == version]
        if shape == "blackhole" and pods:
            block = 26 if version == 4 else 122
            subnet = draw(networks(within=pods[0], min_prefix=max(pods[0].prefixlen, block),
                                   max_prefix=max(pods[0].prefixlen, block)))
            return RouteBlock(subnet, what="blackhole", protocol="bird")
        far = draw(networks(version, min_prefix=16 if version == 4 else 48,
                            max_prefix=28 if version == 4 else 112))
        if shape == "unreachable":
            return RouteBlock(far, what="unreachable", metric=2**32 - 1, protocol="static")
        return RouteBlock(far, what="multipath, nexthop-object, encap or via",
                          protocol=draw(pick(("bird", "static"))),
                          table=draw(pick((254, 100))))

    return build()


_BLOCK_SHAPES = st.sampled_from(("multipath", "blackhole", "unreachable"))

_VERDICTS = ("drop", "reject", "return", "queue", "untrack")
_NAT_ACTIONS = ("masquerade", "snat", "exempt")


def _pools_by_family(given: SearchStrategy[Network] | None) -> dict[int, SearchStrategy[Network]]:
    """Per family, the networks a block matches: ``given``'s of that family, else any
    (made once: a filter made in each draw is checked anew every time)."""
    if given is None:
        return {4: networks(4), 6: networks(6)}
    return {version: given.filter(functools.partial(_of_version, version)) for version in (4, 6)}


def _of_version(version: int, net: Network) -> bool:
    return net.version == version


def forward_blocks(
    family: int | None = None,
    *,
    networks_of: SearchStrategy[Network] | None = None,
    devices: Sequence[str | None] = (None, *DEFAULT_DEVICES[:2]),
    verdicts: Sequence[str] = _VERDICTS,
) -> SearchStrategy[ForwardBlock]:
    """Foreign rules deciding forwarded traffic before k3snet's accept, as the iptables and
    nftables backends observe them (:class:`~k3snet.model.ForwardBlock`): every verdict,
    a source, destination and interfaces or none (any), the accepts met before it
    (``accepted``, read one way) and whether it comes after an accept of every reply.

    ``networks_of``: where its source, destination and accepted traffic come from
    (narrow it to make blocks meet the forward rules of a test often); ``verdicts``:
    only some (``("drop", "reject")``: the final ones).
    """
    _check_family(family)
    _pool("devices", devices, each=_interface)
    _pool("verdicts", verdicts, each=lambda verdict: ForwardBlock(4, verdict, "x", "x"))
    if networks_of is not None:
        _check_strategies(networks_of=networks_of)

    pools = _pools_by_family(networks_of)

    @st.composite
    def build(draw: st.DrawFn) -> ForwardBlock:
        version = draw(families(family))
        pool = pools[version]
        source, destination = draw(maybe(pool)), draw(maybe(pool))
        accepted = [ForwardRule(draw(pool), draw(pool), in_interface=draw(pick(devices)),
                                out_interface=draw(pick(devices)))
                    for _ in range(draw(_ints(0, 2)))]
        verdict = draw(pick(verdicts))
        return ForwardBlock(version, verdict, f"a {verdict} rule",
                            f"iptables IPv{version} filter FORWARD", source=source,
                            destination=destination, in_interface=draw(pick(devices)),
                            out_interface=draw(pick(devices)), accepted=accepted,
                            replies_accepted=draw(st.booleans()))

    return build()


def nat_blocks(
    family: int | None = None,
    *,
    networks_of: SearchStrategy[Network] | None = None,
    devices: Sequence[str | None] = (None, *DEFAULT_DEVICES[:2]),
    actions: Sequence[str] = _NAT_ACTIONS,
) -> SearchStrategy[NatBlock]:
    """Foreign NAT rules met before k3snet's, as the iptables and nftables backends observe
    them (:class:`~k3snet.model.NatBlock`): a masquerade, an SNAT (to a unicast address,
    or to one k3snet does not model: ``to_address=None``) or an exemption (a ``RETURN``),
    with a source, destination and out interface or none (any).

    ``networks_of`` and ``actions`` steer as :func:`forward_blocks`' arguments do.
    """
    _check_family(family)
    _pool("devices", devices, each=_interface)
    _pool("actions", actions, each=lambda action: NatBlock(4, action, "x", "x"))
    if networks_of is not None:
        _check_strategies(networks_of=networks_of)

    pools = _pools_by_family(networks_of)

    @st.composite
    def build(draw: st.DrawFn) -> NatBlock:
        version = draw(families(family))
        pool = pools[version]
        action = draw(pick(actions))
        to = draw(maybe(_SNAT_TO[version])) if action == "snat" else None
        return NatBlock(version, action, f"a {action} rule", f"iptables IPv{version} nat "
                        "POSTROUTING", source=draw(maybe(pool)), destination=draw(maybe(pool)),
                        out_interface=draw(pick(devices)), to_address=to)

    return build()


def cni_rules(cluster: Cluster = _K3S) -> SearchStrategy[MasqueradeRule | ForwardRule]:
    """The NAT and FORWARD rules flannel (as K3s runs it) writes for ``cluster``'s pod CIDRs.

    Masquerade of pod traffic leaving the cluster (``FLANNEL-POSTRTG``: every
    destination but the pod CIDR itself and multicast, ``--random-fully``) and
    forward accepts from and to the pod CIDR (``FLANNEL-FWD``).
    """
    if not isinstance(cluster, Cluster) or not cluster.pod_cidrs:
        raise ModelError(f"cni_rules needs a k3snet.spec.Cluster with pod CIDRs, got {cluster!r}")
    multicast = {4: parse_network("224.0.0.0/4"), 6: parse_network("ff00::/8")}
    anywhere = {4: parse_network("0.0.0.0/0"), 6: parse_network("::/0")}
    shapes: list[MasqueradeRule | ForwardRule] = []
    for pods in cluster.pod_cidrs:
        shapes += [
            MasqueradeRule(pods, exclude=[pods, multicast[pods.version]], random_fully=True),
            ForwardRule(pods, anywhere[pods.version]),
            ForwardRule(anywhere[pods.version], pods),
        ]
    return st.sampled_from(shapes)


def foreign_objects(family: int | None = None, *,
                    cluster: Cluster = _K3S) -> SearchStrategy[NetObject]:
    """What a K3s node holds besides k3snet's objects: :func:`foreign_routes`,
    :func:`route_blocks`, :func:`cni_rules` and sysctls with the values a node boots
    with.

    For ``states(foreign=foreign_objects())`` and ``state_pairs(foreign=...)``.
    """
    _check_family(family)
    parts: list[SearchStrategy[NetObject]] = [foreign_routes(family, cluster=cluster),
                                              route_blocks(family, cluster=cluster),
                                              sysctls(values=("0", "1"))]
    pods = [n for n in cluster.pod_cidrs if family is None or n.version == family]
    if pods:
        parts.append(cni_rules(Cluster(pod_cidrs=pods, service_cidrs=cluster.service_cidrs)))
    return st.one_of(parts)


def for_type(cls: type[Any]) -> SearchStrategy[Any]:
    """The default strategy for a k3snet type (what ``st.from_type(cls)`` gives)."""
    table: dict[type[Any], Any] = {
        Route: routes, MasqueradeRule: masquerade_rules, SnatRule: snat_rules,
        ForwardRule: forward_rules, Sysctl: sysctls, State: states, Spec: specs,
        RouteBlock: route_blocks, ForwardBlock: forward_blocks, NatBlock: nat_blocks,
    }
    if cls not in table:
        raise ModelError(f"no k3snet strategy for {cls!r}")
    strategy: SearchStrategy[Any] = table[cls]()
    return strategy


# ------------------------------------------------------------------ hostile text
# Added for issue 8 (property tests and fuzzing of every string field): text built
# to break the languages k3snet writes (nft text and JSON, iptables-restore input,
# route files, sysctl.d, Corefiles, YAML manifests). Kept as a block of its own.

HOSTILE_FRAGMENTS: tuple[str, ...] = (
    '"', "'", "{", "}", "[", "]", ";", "#", ",", "=", ":", "/", "\\", "%", "$(", "`",
    "\n", "\r", "\t", " ", "\x00", "\x1b", "\x85", "\u2028", "\u202e", "\ufeff", "\u00e9", "\u210c",
    "%eth0", "%1", "%x y", "..", "-j ACCEPT", "flush ruleset", "COMMIT\n*filter\n-F",
    "}\n.:53 { forward . 192.0.2.1 }\n", '"}}]}}},{"flush":{"ruleset":null}}',
    "\n[Route]\nDestination=0.0.0.0/0", "\n  - to: 0.0.0.0/0", "{{.Values}}",
)
"""Pieces of hostile text: metacharacters of every output language, zone ids,
control and bidi characters, and whole injected lines or blocks."""

_VALID_LOOKING: tuple[str, ...] = (
    "eth0", "cni0", "flannel.1", "10.42.0.0/16", "192.168.1.5", "fd01:1::5", "fe80::1",
    "fe80::1%eth0", "net.ipv4.ip_forward", "1", "corp.example",
)


def hostile_text(*, max_pieces: int = 6, max_long: int = 5000) -> SearchStrategy[str]:
    """Hostile strings: fragments of :data:`HOSTILE_FRAGMENTS` and valid-looking values
    glued together (``eth0"; flush ruleset``, ``fd01:1::5%1"}``), arbitrary unicode,
    and very long names (up to ``max_long`` characters).
    """
    if max_pieces < 1 or max_long < 16:
        raise ModelError("need max_pieces >= 1 and max_long >= 16")
    piece = st.one_of(st.sampled_from(HOSTILE_FRAGMENTS), st.sampled_from(_VALID_LOOKING),
                      st.text(max_size=3))
    glued = st.lists(piece, min_size=1, max_size=max_pieces).map("".join)
    long = st.tuples(st.sampled_from(_VALID_LOOKING), st.integers(16, max_long)).map(
        lambda pair: pair[0] + "x" * pair[1])
    return st.one_of(glued, glued, st.text(max_size=20), long)


def hostile_values() -> SearchStrategy[Any]:
    """What a hostile spec document may hold in any field: hostile text, wrong types,
    huge numbers, nested containers."""
    return st.one_of(
        hostile_text(), hostile_text(), hostile_text(),
        st.none(), st.booleans(), st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(hostile_text(max_pieces=2), max_size=2),
        st.dictionaries(hostile_text(max_pieces=2), st.integers(), max_size=2),
    )


def json_values(*, max_leaves: int = 6) -> SearchStrategy[Any]:
    """Any JSON value: ``null``, booleans, integers, finite floats, short text, and
    lists and objects of them (up to ``max_leaves`` scalars)."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(
        allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3), max_leaves=max_leaves)


def json_places(document: Any) -> list[tuple[Any, ...]]:
    """Every place inside a JSON document: the path of keys and indexes to each value."""
    places: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while stack:
        where, value = stack.pop()
        if where:
            places.append(where)
        items = value.items() if isinstance(value, dict) else (
            enumerate(value) if isinstance(value, list) else ())
        stack.extend(((*where, key), inner) for key, inner in reversed(list(items)))
    return places


@st.composite
def edited_documents(draw: st.DrawFn, document: Any, values: SearchStrategy[Any] | None = None,
                     *, where: Callable[[tuple[Any, ...]], bool] | None = None,
                     keys: Sequence[str] = ()) -> Any:
    """``document`` (JSON: dicts and lists) with one value replaced by a drawn one.

    The place is any value inside it (``where`` keeps only the paths it accepts); when
    ``keys`` are given, an object may instead gain (or have replaced) one of those keys.
    ``values`` defaults to :func:`json_values`. Readers of k3snet's JSON (a plan file, a
    state, a doctor bundle) are tested with it: whatever the edit, read or refused with
    k3snet's own error. ``document`` itself is never changed.
    """
    import copy  # noqa: PLC0415 - only where a document is edited

    edited = copy.deepcopy(document)
    places = [p for p in json_places(edited) if where is None or where(p)]
    if not places:
        return edited
    *parents, last = draw(st.sampled_from(places), label="place")
    inner = edited
    for key in parents:
        inner = inner[key]
    value = draw(values if values is not None else json_values(), label="value")
    if keys and isinstance(inner[last], dict) and draw(st.booleans(), label="a key"):
        inner[last][draw(st.sampled_from(list(keys)), label="key")] = value
    else:
        inner[last] = value
    return edited


__all__ += ["HOSTILE_FRAGMENTS", "edited_documents", "hostile_text", "hostile_values",
            "json_places", "json_values"]
