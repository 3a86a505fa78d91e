"""Which destinations the node routes by each device: what an out-interface match can meet.

A forwarded packet leaves by the device of the route the kernel picks for its
destination. So a drop that names an out-interface and no destination, as Docker's
``-A DOCKER ! -i docker0 -o docker0 -j DROP``, only ever meets packets for the
networks routed by that device (Docker's bridge subnet): never a pod's connection to a
database routed by the uplink, nor its replies, routed by the pods' interface
(``cni0``, ``flannel.1``, ``cali*``). :class:`RoutedBy` holds the node's unicast routes
of every table but ``local`` (what policy routing may pick), read with one rtnetlink
dump per observe that reads the tables (never on the observe cache's path), and gives
the prefixes holding exactly those (:meth:`RoutedBy.cover`), the destinations such a
block is judged with (:mod:`k3snet.backends.iptables.foreign`; the nftables backend's
read of other ``ip``/``ip6`` tables, :mod:`k3snet.backends.nftables.parse`, the same).
The same for a drop by in-interface and no source (Docker 28's internal network,
``! -d 192.0.2.0/24 -i br-int -j DROP``): a packet comes in by the device its source is
routed by (the reverse path; not so on a node routing asymmetrically).

It also tells which devices the node has (:meth:`RoutedBy.has_device`, one link dump when
first asked): a chain hooked on a device's ingress or egress sees no packet while the
device is absent.

A doubt counts against k3snet: a route whose device is not known (multipath, nexthop
object) may leave by any device, a device no route names gives no cover (it may come
up later with any route), nor does a default route. Multicast destinations are never a
forwarded pod connection's, and are left out, and so are IPv6 link-local ones
(``fe80::/10``) but for a device with no other route.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from k3snet.model import interfaces_left
from k3snet.model.cidr import Network

if TYPE_CHECKING:  # the netlink modules are imported by read_routes alone, when it runs
    from k3snet.backends.netlink.socket_driver import SocketDriver

__all__ = ["MOST_PREFIXES", "RoutedBy", "read_links", "read_routes"]

MOST_PREFIXES = 16
"""The most prefixes :meth:`RoutedBy.cover` gives: a foreign block is judged once per
prefix, and once per pair for a source and a destination both covered, whose product
is held to as many (``! -i eth0 ! -o eth0 -j DROP`` was 16 x 16 blocks)."""


class RoutedBy:
    """The node's unicast routes as (destination, device): ``None`` for a device not known.

    >>> routed = RoutedBy([("172.17.0.0/16", "docker0"), ("0.0.0.0/0", "eth0"),
    ...                    ("10.42.0.0/24", "cni0"), ("10.42.1.0/24", "flannel.1")])
    >>> routed.cover(4, "docker0")
    (IPv4Network('172.17.0.0/16'),)
    >>> routed.cover(4, "eth0") is None  # the default route: any destination
    True
    >>> routed.cover(4, "eth1") is None  # no route: it may get any one later
    True
    >>> routed.cover(4, None, ["eth0"])  # what leaves by another device than eth0
    (IPv4Network('10.42.0.0/23'), IPv4Network('172.17.0.0/16'))
    >>> RoutedBy([("fe80::/64", "docker0")]).cover(6, "docker0")  # forwards nothing
    (IPv6Network('fe80::/64'),)
    """

    def __init__(self, routes: Iterable[tuple[Network | str, str | None]]
                 | Callable[[], Iterable[_Raw]],
                 devices: Iterable[str] | Callable[[], Iterable[str] | None] | None = None,
                 ) -> None:
        # A callable (raw routes, read_routes) is read at the first cover(): no dump when
        # no block needs one. ``devices``: the node's device names (a callable, read_links,
        # at the first has_device()); None: not known, every name may be a device.
        self._devices = devices
        self._names: frozenset[str] | None = None
        self._names_read = False
        if callable(routes):
            self._load = routes
        else:
            nets = [(ipaddress.ip_network(net, strict=False), device) for net, device in routes]
            raw = [_raw(net, device) for net, device in nets if not net.is_multicast]
            self._load = lambda: raw
        self._read: list[_Raw] | None = None
        # The routes are read once and never change: a cover is worked out once per
        # question (a node with 10 000 routes: tens of ms each, asked by every drop by
        # interface alone of an observe, most of them the same).
        self._covers: dict[tuple[int, str | None, tuple[str, ...], int],
                           tuple[Network, ...] | None] = {}

    @property
    def knows_devices(self) -> bool:
        """Whether :meth:`has_device` answers from the node's devices (read then, if not
        yet), not True for any name as it does when they could not be read."""
        self.has_device("")
        return self._names is not None

    def has_device(self, name: str) -> bool:
        """Whether the node has a device ``name`` names now (nft's ``eth*``: one whose
        name starts so); True when the devices are not known.

        >>> RoutedBy([], devices=["lo", "eth0"]).has_device("wlan0")
        False
        >>> RoutedBy([], devices=["lo", "eth0"]).has_device("eth*")
        True
        """
        if not self._names_read:
            self._names_read = True
            names = self._devices() if callable(self._devices) else self._devices
            self._names = None if names is None else frozenset(names)
        if self._names is None:
            return True
        if name.endswith("*"):
            return any(device.startswith(name[:-1]) for device in self._names)
        return name in self._names

    def _routes(self) -> list[_Raw]:
        if self._read is None:
            self._read = list(self._load())
        return self._read

    def cover(self, family: int, interface: str | None, negated: Sequence[str] = (), *,
              most: int = MOST_PREFIXES) -> tuple[Network, ...] | None:
        """Every destination a route by a device that ``interface`` (a name, or ``eth+``;
        ``None``: any) may name and none of ``negated`` does (the matches of ``! -o
        eth0``: what leaves by another device) carries, with the routes of devices not
        known, as the fewest prefixes holding exactly those (``10.42.0.0/24`` and
        ``172.17.0.0/16`` stay two, adjacent ones merge); ``None`` when that is every
        address or no route names such a device. More than ``most`` (at most
        :data:`MOST_PREFIXES`) are widened, all to the longest length at which at most
        that many remain (a doubt counts against k3snet: they hold more); a drop by both
        interfaces asks its source's for as many as leaves its blocks at most
        ``MOST_PREFIXES``.

        IPv6 link-local routes (``fe80::/64`` on every device) count only for a device
        with no other: the kernel forwards no packet to a link-local address, and one
        with only those (a bridge without a global IPv6 address) forwards nothing.

        The routes are read at the first call and kept: each answer is worked out once
        and given again for the same question."""
        most = max(1, min(most, MOST_PREFIXES))
        key = (family, interface, tuple(negated), most)
        if key not in self._covers:
            self._covers[key] = self._cover(family, interface, negated, most)
        return self._covers[key]

    def _cover(self, family: int, interface: str | None, negated: Sequence[str],
               most: int) -> tuple[Network, ...] | None:
        bits = 32 if family == 4 else 128
        meets: dict[str | None, bool] = {None: True}
        found: list[tuple[int, int]] = []
        link_local: list[tuple[int, int]] = []
        named = False
        for version, address, length, device in self._routes():
            if version != family:
                continue
            if device not in meets:
                meets[device] = interfaces_left(
                    [m for m in (interface, device) if m is not None], negated)
            if not meets[device]:
                continue
            named = named or device is not None
            if family == 6 and address >> 118 == _LINK_LOCAL_TOP and length >= 10:
                link_local.append((address, length))
            else:
                found.append((address, length))
        if not named:
            return None
        prefixes = _collapsed(found or link_local, bits)
        if len(prefixes) > most:
            prefixes = _widened(prefixes, bits, most)
        if prefixes[0][1] == 0:
            return None
        kind = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
        return tuple(kind(prefix) for prefix in prefixes)


def _collapsed(found: Iterable[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    """The fewest (address, length) prefixes holding exactly the addresses of ``found``,
    in address order: those inside another dropped, two halves of one prefix merged."""
    return _merged(sorted(set(found)), bits)


def _merged(ordered: Iterable[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    """:func:`_collapsed` of prefixes already in (address, length) order."""
    kept: list[tuple[int, int]] = []
    for address, length in ordered:
        if kept:
            last, last_length = kept[-1]
            if (address ^ last) >> (bits - last_length) == 0 and last_length <= length:
                continue  # inside the last one (a shorter prefix sorts before its parts)
        kept.append((address, length))
        while len(kept) > 1:
            (low, low_length), (high, high_length) = kept[-2], kept[-1]
            half = 1 << (bits - high_length) if high_length else 0
            if low_length != high_length or not half or low & half or low ^ high != half:
                break
            kept[-2:] = [(low, low_length - 1)]
    return kept


def _widened(prefixes: list[tuple[int, int]], bits: int, most: int) -> list[tuple[int, int]]:
    """At most ``most`` prefixes holding ``prefixes`` (collapsed, in address
    order, more than that): each one longer than the longest length at which so few
    remain widened to it, then collapsed. A Calico node's ``/32`` per pod and ``/26`` per
    other node stay apart from Docker's ``172.17.0.0/16`` (the one network holding them
    all was every address).

    Two neighbours become one network at a length no longer than the leading bits their
    addresses share (disjoint, they differ within the shorter one's prefix), and no
    others do: at a length ``n`` one more network remains than neighbours sharing fewer
    than ``n`` bits, so the longest that fits is the ``most``-th smallest share,
    found in one pass (a node with 10 000 routes: a widening as cheap as the collapse)."""
    shared = [bits - (a ^ b).bit_length() for (a, _), (b, _) in itertools.pairwise(prefixes)]
    length = heapq.nsmallest(most, shared)[-1]
    shift = bits - length
    # the first of each network left: where a neighbour shares fewer bits (at most `most`)
    firsts = [prefixes[0], *(prefixes[at + 1] for at, n in enumerate(shared) if n < length)]
    return _merged([(a >> shift << shift, length) if n > length else (a, n)
                    for a, n in firsts], bits)


_Raw = tuple[int, int, int, str | None]
"""A route as :class:`RoutedBy` keeps it: (4 or 6, destination as an integer, prefix
length, device or ``None``)."""

_LINK_LOCAL_TOP = 0xFE80 >> 6  # fe80::/10: the top 10 bits of an address


def _raw(net: Network, device: str | None) -> _Raw:
    return (net.version, int(net.network_address), net.prefixlen, device)


def _all_multicast(version: int, address: int, length: int) -> bool:
    """Whether every address of the prefix is multicast (``224.0.0.0/4``, ``ff00::/8``):
    not so of ``224.0.0.0/3``, which starts there but holds ``240.0.0.0/4`` too, routed
    as unicast."""
    if version == 4:
        return length >= 4 and address >> 28 == 0xE
    return length >= 8 and address >> 120 == 0xFF


def read_links(driver: SocketDriver) -> list[str]:
    """The names of the namespace's devices (one link dump), as :class:`RoutedBy` takes
    them."""
    return [link.name for link in driver.links().values()]


def read_routes(driver: SocketDriver) -> list[_Raw]:
    """The namespace's unicast routes of every table but ``local``, as :class:`RoutedBy`
    takes them: one link dump, one route dump per family, decoded only as far as the
    destination and device (a node with 10 000 routes: see docs/performance.md)."""
    # Here, not at the top: a cold `k3snet apply --backend iptables` that meets no drop by
    # interface alone never imports the netlink backend's modules.
    from k3snet.backends.netlink.codec import (  # noqa: PLC0415
        HDR,
        RT_TABLE_LOCAL,
        RTA_DST,
        RTA_MULTIPATH,
        RTA_OIF,
        RTA_TABLE,
        RTM_F_CLONED,
        RTM_GETROUTE,
        RTMSG,
        RTN_UNICAST,
        U32,
        attrs_of,
        route_dump_request,
    )

    names = {index: link.name for index, link in driver.links().items()}
    found: list[_Raw] = []
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        for msg in driver.dump(RTM_GETROUTE, route_dump_request(family, None),
                               missing_ok=True):
            # A route with a source prefix (IPv6 `from`) is read as any other: packets
            # from those sources, the pods' maybe, leave by its device.
            _family, length, _src_len, _tos, table, _proto, _scope, kind, flags = (
                RTMSG.unpack_from(msg, HDR))
            found_attrs = attrs_of(msg, HDR + RTMSG.size)
            if RTA_TABLE in found_attrs:
                table = U32.unpack(found_attrs[RTA_TABLE])[0]
            if kind != RTN_UNICAST or flags & RTM_F_CLONED or table == RT_TABLE_LOCAL:
                continue
            address = int.from_bytes(found_attrs.get(RTA_DST, b""), "big")
            if _all_multicast(version, address, length):
                continue  # never a pod connection's destination
            oif = found_attrs.get(RTA_OIF)
            device = None  # multipath, nexthop object: it may leave by any device
            if oif is not None and RTA_MULTIPATH not in found_attrs:
                device = names.get(U32.unpack(oif)[0])
            found.append((version, address, length, device))
    return found
