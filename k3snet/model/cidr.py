"""CIDRs and addresses: parsing, overlap, containment and aggregation.

k3snet uses the standard :mod:`ipaddress` types for every prefix and address;
IPv4 and IPv6 mix freely in collections and are never compared across families.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final, TypeAlias

from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError

__all__ = [
    "Address",
    "Network",
    "address_text",
    "aggregate",
    "contains",
    "family_of",
    "go_cidr_text",
    "ipv4_text",
    "network_sort_key",
    "network_text",
    "not_unicast",
    "not_unicast_network",
    "overlaps",
    "parse_address",
    "parse_network",
    "subtract",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An IPv4 or IPv6 network (a CIDR), as :func:`parse_network` gives it."""
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IPv4 or IPv6 address, as :func:`parse_address` gives it."""


# The common spelling of an IPv4 prefix or address, and only spellings ipaddress accepts
# with the same value: dotted quad without leading zeros, prefix 0..32 without one.
# Anything else (IPv6, a netmask, leading zeros, garbage) takes ipaddress's own parser,
# so what is refused, and the message, stay ipaddress's. Text -> int -> the tuple
# constructor costs ~2 us where ip_network(text) costs ~4 us (CPU, 20 000 prefixes of a
# 10k-destination spec: benchmarks/bench_spec.py).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"({_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})(?:/(3[0-2]|[12]?[0-9]))?")
_inet_aton = socket.inet_aton


def _ipv4_network(text: str, strict: bool) -> ipaddress.IPv4Network | None:
    """``text`` as an IPv4 network if it is in the common spelling (else ``None``).

    Raises ipaddress's own ``ValueError`` for host bits set (with ``strict``).
    """
    match = _IPV4.fullmatch(text)
    if match is None:
        return None
    address, prefix = match.groups()
    return ipaddress.IPv4Network(
        (int.from_bytes(_inet_aton(address), "big"), 32 if prefix is None else int(prefix)),
        strict=strict)


DECIMAL_OCTETS: Final = tuple(str(i) for i in range(256))
"""Decimal octets: an f-string of four of them is ~4x faster than ipaddress' str() and
~1.5x faster than socket.inet_ntoa (which costs ~230 ns a call)."""
_V4NET: Final = ipaddress.IPv4Network
_V4ADDR: Final = ipaddress.IPv4Address


def ipv4_text(value: int) -> str:
    """The dotted quad of an IPv4 address given as its integer."""
    return (f"{DECIMAL_OCTETS[value >> 24]}.{DECIMAL_OCTETS[(value >> 16) & 255]}."
            f"{DECIMAL_OCTETS[(value >> 8) & 255]}.{DECIMAL_OCTETS[value & 255]}")


def network_text(net: Network) -> str:
    """``str(net)``, fast for IPv4 (ipaddress' own costs about a microsecond a call;
    plans, rules and JSON print tens of thousands of them)."""
    if type(net) is _V4NET:
        return f"{ipv4_text(int(net.network_address))}/{net.prefixlen}"
    return str(net)


def address_text(address: Address) -> str:
    """``str(address)``, fast for IPv4."""
    if type(address) is _V4ADDR:
        return ipv4_text(int(address))
    return str(address)


def parse_network(value: str | Network, *, strict: bool = True) -> Network:
    """Parse ``value`` as a CIDR.

    With ``strict`` (the default) host bits must be zero: ``10.42.0.1/16`` is an
    error, because it usually means a typo for the gateway or the prefix.

    >>> parse_network("10.42.0.0/16")
    IPv4Network('10.42.0.0/16')
    >>> parse_network("10.42.0.1/16", strict=False)
    IPv4Network('10.42.0.0/16')
    """
    if type(value) is ipaddress.IPv4Network:  # the common case first: no zone to check
        return value
    if type(value) is str:  # the next most common: IPv4 text, no zone to check either
        try:
            fast = _ipv4_network(value, strict)
        except ValueError:
            fast = None  # host bits set: the message comes from the path below
        if fast is not None:
            return fast
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return _without_zone(value)
    if not isinstance(value, str):
        raise ModelError(f"expected a CIDR string, got {type(value).__name__} {_shown(value)}")
    try:
        text = value.strip()
        fast = _ipv4_network(text, strict)
        net = ipaddress.ip_network(text, strict=strict) if fast is None else fast
    except ValueError as exc:
        # Not the error's text: ipaddress quotes the input, which may say anything.
        fixed = _lenient_network(text) if strict else None
        if fixed is not None:
            raise ModelError(f"{_shown(value)} has host bits set (did you mean {fixed}?)") from exc
        raise ModelError(f"{_shown(value)} is not a valid CIDR") from exc
    return _without_zone(net)


def _lenient_network(text: str) -> Network | None:
    """``text`` as a network with its host bits masked off, or ``None`` if it is none."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_address(value: str | Address) -> Address:
    """Parse ``value`` as a single IPv4 or IPv6 address."""
    if type(value) is ipaddress.IPv4Address:
        return value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return _checked_zone(value)
    if not isinstance(value, str):
        raise ModelError(f"expected an address string, got {type(value).__name__} {_shown(value)}")
    try:
        text = value.strip()
        match = _IPV4.fullmatch(text)
        address = (ipaddress.IPv4Address(int.from_bytes(_inet_aton(text), "big"))
                   if match is not None and match.group(2) is None
                   else ipaddress.ip_address(text))
    except ValueError as exc:
        raise ModelError(f"{_shown(value)} is not a valid IP address") from exc
    address = _checked_zone(address)
    if "%" in text and value[-1:].isspace():
        # White space around an address is no part of it, but after a zone it ends the
        # zone (ipaddress keeps it there): `fe80::2%eth0\n`, a YAML block's newline,
        # names no interface, as a device `eth0\n` does not; read as eth0, it was not
        # the text given.
        _check_zone_name(value.partition("%")[2], value)
    return address


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages never echo huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_zone(net: Network) -> Network:
    """Refuse a prefix with an IPv6 zone id (``fd00::%x/64``): no prefix has one.

    :mod:`ipaddress` accepts any text after ``%``; left in, it would reach nft
    text, iptables lines and config files verbatim.
    """
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.scope_id is not None:
        raise ModelError(f"{_shown(str(net))}: a prefix has no zone id ('%...'); "
                         "give the interface where the model has one (a route's device)")
    return net


def _checked_zone(address: Address) -> Address:
    """Allow a zone id only on a link-local IPv6 address, and only an interface name.

    ``fe80::1%eth0`` is meaningful; ``fd01::5%anything`` is not, and the text
    after ``%`` would otherwise reach every output language verbatim.
    """
    if not isinstance(address, ipaddress.IPv6Address) or address.scope_id is None:
        return address
    zone = address.scope_id
    if not address.is_link_local:
        raise ModelError(f"{_shown(str(address))}: only a link-local address (fe80::/10) can "
                         "have a zone id ('%...')")
    _check_zone_name(zone, str(address))
    return address


def _check_zone_name(zone: str, shown: str) -> None:
    """Refuse a zone id that is no interface name (the address given is ``shown``)."""
    # Imported here: _base imports this module.
    from k3snet.model._base import validate_interface_name  # noqa: PLC0415

    try:
        validate_interface_name(zone)
    except ModelError as exc:
        raise ModelError(f"the zone id of {_shown(shown)} must be an interface "
                         f"name: {exc}") from exc
    if zone.isascii() and zone.isdigit():
        # RFC 4007's numeric zone is an interface index (`ping fe80::1%2`): read as a
        # device named `2` it named another device or none, and an index changes when
        # the device is recreated.
        raise ModelError(f"the zone id of {_shown(shown)} is a number, an interface index: "
                         "k3snet takes the interface's name (fe80::1%eth0), or give it as "
                         "the device (a device named by digits alone too)")


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def not_unicast(address: Address) -> str | None:
    """What ``address`` is when no packet can be sent to it as to one host (``"a
    multicast address"``), else ``None``: the unspecified, multicast, loopback, limited
    broadcast and IPv4-mapped addresses, never a next hop nor a SNAT source."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return "a loopback address"
    if address == _LIMITED_BROADCAST:
        return "the broadcast address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "an IPv4-mapped address (never a packet's source or destination on the wire)"
    return None


_NOT_UNICAST_RANGES: dict[int, tuple[tuple[Network, str], ...]] = {
    4: ((ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
        (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
        (ipaddress.IPv4Network("255.255.255.255/32"), "the broadcast address"),
        (ipaddress.IPv4Network("0.0.0.0/32"), "the unspecified address")),
    6: ((ipaddress.IPv6Network("::1/128"), "loopback"),
        (ipaddress.IPv6Network("ff00::/8"), "multicast"),
        (ipaddress.IPv6Network("::/128"), "the unspecified address"),
        (ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped (never on the wire)")),
}


def not_unicast_network(net: Network) -> str | None:
    """What ``net`` is when none of its addresses is one a packet is routed to as to a
    host (``"multicast"``, ``"loopback"``: every address of it is :func:`not_unicast`
    alike), else ``None``. ``0.0.0.0/0`` holds them and others: ``None``."""
    for outer, kind in _NOT_UNICAST_RANGES[net.version]:
        if contains(outer, net):
            return kind
    return None


def family_of(value: Network | Address) -> int:
    """4 or 6."""
    return value.version


# overlaps and contains compare the leading bits as integers: the same answers as
# ipaddress's overlaps, subnet_of and ``in`` (prefixes are aligned, so two overlap
# exactly when one holds the other), at a fraction of the cost (ipaddress builds
# broadcast addresses for each), and they run for every destination of a spec.


def overlaps(a: Network, b: Network) -> bool:
    """True when ``a`` and ``b`` share at least one address (never across families)."""
    if a.version != b.version:
        return False
    shift = a.max_prefixlen - min(a.prefixlen, b.prefixlen)
    return int(a.network_address) >> shift == int(b.network_address) >> shift


def contains(outer: Network, inner: Network | Address) -> bool:
    """True when every address of ``inner`` lies in ``outer`` (never across families)."""
    if outer.version != inner.version:
        return False
    shift = outer.max_prefixlen - outer.prefixlen
    if isinstance(inner, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return int(inner) >> shift == int(outer.network_address) >> shift
    return (inner.prefixlen >= outer.prefixlen
            and int(inner.network_address) >> shift == int(outer.network_address) >> shift)


def network_sort_key(net: Network) -> tuple[int, int, int]:
    """A key that orders networks of both families: v4 before v6, then address, prefix."""
    return (net.version, int(net.network_address), net.prefixlen)


# Go's net.ParseCIDR: an address, "/" and a decimal prefix length, nothing around them.
# Python's ipaddress also takes a bare address (a /32), spaces around it and a netmask
# (10.0.0.0/255.0.0.0), which every Go reader (ip-masq-agent, the Cilium agent) refuses.
_GO_CIDR = lazy_pattern(r"[0-9A-Fa-f.:]+/[0-9]+")


def go_cidr_text(value: str) -> bool:
    """``value`` is spelled as Go's ``net.ParseCIDR`` takes a CIDR (an address, ``/`` and
    decimal prefix bits, nothing else); whether the address is valid is
    :func:`parse_network`'s to say.

    >>> go_cidr_text("10.0.0.0/8"), go_cidr_text("10.0.0.0"), go_cidr_text(" 10.0.0.0/8")
    (True, False, False)
    """
    return _GO_CIDR.fullmatch(value) is not None


def aggregate(prefixes: Iterable[str | Network] | str | Network) -> tuple[Network, ...]:
    """The smallest set of prefixes covering exactly the same addresses.

    Works on a mix of families (IPv4 first, then IPv6) and accepts prefixes
    with host bits set (they are masked, as the kernel does). For one family it
    equals :func:`ipaddress.collapse_addresses`. One prefix may be given alone.

    >>> aggregate(["10.0.0.0/25", "10.0.0.128/25", "fd00::/64", "10.0.0.5/32"])
    (IPv4Network('10.0.0.0/24'), IPv6Network('fd00::/64'))
    """
    if isinstance(prefixes, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        # Iterated, a string gave its characters ("'1' is not a valid CIDR") and a
        # network its addresses.
        prefixes = (prefixes,)
    by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for prefix in prefixes:
        net = parse_network(prefix, strict=False)
        start = int(net.network_address)
        by_family[net.version].append((start, start + net.num_addresses))
    result: list[Network] = []
    for version, ranges in sorted(by_family.items()):
        result.extend(_ranges_to_networks(version, _merge_ranges(ranges)))
    return tuple(result)


def subtract(base: Network, removed: Iterable[Network]) -> tuple[Network, ...]:
    """The prefixes of ``base`` that are not in any of ``removed``, aggregated."""
    start = int(base.network_address)
    end = start + base.num_addresses
    holes = _merge_ranges(
        [
            (max(start, int(r.network_address)), min(end, int(r.network_address) + r.num_addresses))
            for r in removed
            if overlaps(base, r)
        ]
    )
    pieces: list[tuple[int, int]] = []
    cursor = start
    for lo, hi in holes:
        if lo > cursor:
            pieces.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < end:
        pieces.append((cursor, end))
    return tuple(_ranges_to_networks(base.version, pieces))


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge half-open integer ranges that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _ranges_to_networks(version: int, ranges: list[tuple[int, int]]) -> list[Network]:
    """Cover each half-open range with the fewest aligned prefixes."""
    bits = 32 if version == 4 else 128
    make = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    nets: list[Network] = []
    for start, hi in ranges:
        lo = start
        while lo < hi:
            # The largest block aligned at lo that does not pass hi.
            size = (lo & -lo) if lo else 1 << bits
            while size > hi - lo:
                size >>= 1
            nets.append(make((lo, bits - size.bit_length() + 1)))
            lo += size
    return nets
