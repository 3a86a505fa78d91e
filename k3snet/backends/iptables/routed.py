"""Which destinations the node routes by each device: what an out-interface match can meet.

A forwarded packet leaves by the device of the route the kernel picks for its
destination. So a drop that names an out-interface and no destination, as Docker's
``-A DOCKER ! -i docker0 -o docker0 -j DROP``, only ever meets packets for the
networks routed by that device (Docker's bridge subnet): never a pod's connection to a
database routed by the uplink, nor its replies, routed by the pods' interface
(``cni0``, ``flannel.1``, ``cali*``). :class:`RoutedBy` holds the node's unicast routes
of every table but ``local`` (what policy routing may pick), read with one rtnetlink
dump per observe that reads the tables (never on the observe cache's path), and gives
the smallest network holding them all (:meth:`RoutedBy.cover`), the destination such a
block is judged with (:mod:`k3snet.backends.iptables.foreign`).

A doubt counts against k3snet: a route whose device is not known (multipath, nexthop
object) may leave by any device, a device no route names gives no cover (it may come
up later with any route), nor does a default route. Multicast destinations are never a
forwarded pod connection's, and are left out, and so are IPv6 link-local ones
(``fe80::/10``) but for a device with no other route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from k3snet.backends.netlink.codec import ROUTE_TYPES
from k3snet.backends.netlink.driver import RouteDriver
from k3snet.model import interfaces_may_meet
from k3snet.model.cidr import Network, contains
from k3snet.model.route import Route, RouteBlock

__all__ = ["RoutedBy", "read_routes", "route_pairs"]

_NO_DEVICE = frozenset(ROUTE_TYPES.values())
"""RouteBlock kinds that send no packet out of a device (``blackhole``, ``local`` ...)."""


class RoutedBy:
    """The node's unicast routes as (destination, device): ``None`` for a device not known.

    >>> routed = RoutedBy([("172.17.0.0/16", "docker0"), ("0.0.0.0/0", "eth0"),
    ...                    ("10.42.0.0/24", "cni0"), ("10.42.1.0/24", "flannel.1")])
    >>> routed.cover(4, "docker0")
    IPv4Network('172.17.0.0/16')
    >>> routed.cover(4, "eth0") is None  # the default route: any destination
    True
    >>> routed.cover(4, "eth1") is None  # no route: it may get any one later
    True
    >>> RoutedBy([("fe80::/64", "docker0")]).cover(6, "docker0")  # forwards nothing
    IPv6Network('fe80::/64')
    """

    def __init__(self, routes: Iterable[tuple[Network | str, str | None]]
                 | Callable[[], Iterable[tuple[Network | str, str | None]]]) -> None:
        # A callable is read at the first cover(): no dump when no block needs one.
        self._load = routes if callable(routes) else lambda: routes
        self._read: list[tuple[Network, str | None]] | None = None

    def _routes(self) -> list[tuple[Network, str | None]]:
        if self._read is None:
            self._read = []
            for destination, device in self._load():
                net = ipaddress.ip_network(destination, strict=False)
                if not net.is_multicast:
                    self._read.append((net, device))
        return self._read

    def cover(self, family: int, interface: str) -> Network | None:
        """The smallest network holding every destination a route by a device that
        ``interface`` (a name, or ``eth+``) may name carries, with the routes of devices
        not known; ``None`` when that is every address or no route names such a device.

        IPv6 link-local routes (``fe80::/64`` on every device) count only for a device
        with no other: the kernel forwards no packet to a link-local address, and one
        with only those (a bridge without a global IPv6 address) forwards nothing."""
        routes = [(net, device) for net, device in self._routes() if net.version == family]
        if not any(device is not None and interfaces_may_meet(interface, device)
                   for _, device in routes):
            return None
        nets = [net for net, device in routes
                if device is None or interfaces_may_meet(interface, device)]
        wider = [net for net in nets if not (family == 6 and contains(_LINK_LOCAL, net))]
        nets = wider or nets
        found: Network | None = None
        for net in nets:
            if found is None:
                found = net
            while not contains(found, net):
                found = found.supernet()
        if found is None or found.prefixlen == 0:
            return None
        return found


_LINK_LOCAL = ipaddress.ip_network("fe80::/10")


def route_pairs(routes: Iterable[Route | RouteBlock]) -> list[tuple[Network | str, str | None]]:
    """(destination, device) of what a netlink route dump decoded to (both families, every
    table but ``local``), for :class:`RoutedBy`."""
    pairs: list[tuple[Network | str, str | None]] = []
    for route in routes:
        if isinstance(route, Route):
            pairs.append((route.destination, route.device))
        elif route.what not in _NO_DEVICE and not route.what.startswith("type "):
            pairs.append((route.destination, None))  # multipath, nexthop object: any device
    return pairs


def read_routes(driver: RouteDriver) -> list[tuple[Network | str, str | None]]:
    """The namespace's routes as :class:`RoutedBy` takes them: one link dump, one route
    dump per family."""
    names = {index: link.name for index, link in driver.links().items()}
    return route_pairs(driver.routes(None, names))
