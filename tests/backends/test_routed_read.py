"""``read_routes`` against the kernel: every route by which a forwarded packet may leave.

A route was dropped when its first address was multicast: ``224.0.0.0/3`` starts at
``224.0.0.0`` but holds ``240.0.0.0/4`` too, which the kernel routes as unicast
(``ip route get 240.1.2.3`` leaves by its device), so a drop by that device was judged
to meet nothing there. IPv6 has no such prefix: one starting with ``ff`` is inside
``ff00::/8``, and the kernel's own ``multicast ff00::/8`` of every device is in table
``local``, of another type, left out as such; ``fe00::/7`` starts below it.

An IPv6 route with a source prefix (``2001:db8::/64 from fd42::/56 dev eth1``) was
left out: the pods' packets to that destination leave by ``eth1``, and a drop by
``eth1`` was judged by its other routes alone (link-local ones: no forwarded packet).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from k3snet.backends.netns import NetnsRunner
from k3snet.backends.routed import RoutedBy, read_routes
from k3snet.lab.netns import run_in
from tests.netlink.links import d0_namespace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    with d0_namespace("mcast", "192.168.1.5/24", "fd00:1::5/64", device="eth0") as name:
        yield name


def _raw(ns: str) -> list[tuple[int, int, int, str | None]]:
    """``read_routes`` of ``ns``, through the socket driver the backends open."""
    from k3snet.backends.netlink.socket_driver import open_dump_driver  # noqa: PLC0415

    runner = NetnsRunner(ns)
    try:
        driver = open_dump_driver(runner)
    finally:
        runner.close()
    try:
        return read_routes(driver)
    finally:
        driver.close()


def test_a_route_holding_unicast_addresses_beside_multicast_ones_is_read(ns: str) -> None:
    _ip(ns, "route", "add", "224.0.0.0/3", "dev", "eth0")
    _ip(ns, "route", "add", "224.0.0.0/4", "dev", "eth0", "metric", "5")
    _ip(ns, "-6", "route", "add", "fe00::/7", "dev", "eth0")
    _ip(ns, "-6", "route", "add", "ff00::/8", "dev", "eth0", "table", "100")
    [chosen] = json.loads(_ip(ns, "-j", "route", "get", "240.1.2.3"))
    assert chosen.get("type", "unicast") == "unicast"  # the kernel's view: unicast by eth0
    assert chosen["dev"] == "eth0"
    local = json.loads(_ip(ns, "-6", "-j", "route", "show", "table", "local", "ff00::/8"))
    assert local
    assert {r.get("type") for r in local} == {"multicast"}  # one per device
    raw = _raw(ns)
    read = {(str(ipaddress.ip_network((address, length))), device)
            for _version, address, length, device in raw}
    assert ("224.0.0.0/3", "eth0") in read
    assert ("fe00::/7", "eth0") in read
    assert not {net for net, _ in read} & {"224.0.0.0/4", "ff00::/8"}
    cover = RoutedBy(lambda: raw).cover(4, "eth0")
    assert cover is not None
    assert any(ipaddress.ip_network("240.0.0.0/4").subnet_of(c) for c in cover)  # type: ignore[arg-type]


def test_a_route_with_a_source_prefix_counts_for_its_device(ns: str) -> None:
    _ip(ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
    for dev in ("eth1p", "eth1"):
        _ip(ns, "link", "set", dev, "up")
    _ip(ns, "-6", "route", "add", "2001:db8::/64", "from", "fd42::/56", "dev", "eth1")
    [chosen] = json.loads(_ip(ns, "-6", "-j", "route", "get", "2001:db8::1", "from", "fd42::5"))
    assert chosen["dev"] == "eth1"  # the kernel's view: a pod's packet leaves by eth1
    raw = _raw(ns)
    cover = RoutedBy(lambda: raw).cover(6, "eth1")
    assert cover is not None
    assert ipaddress.ip_network("2001:db8::/64") in cover
